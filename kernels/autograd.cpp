// The eager fast path of fastgen's fused ops on the CPU: each op with its backward in C++, registered for
// the Autograd dispatch key, so an eager call is one dispatcher call and its backward never enters Python.
// A `fastgen::` op (Python, torch.library) costs a Python dispatch and Python autograd glue for its forward and
// again for its backward; the plain modules it replaces pay none. torch.compile still traces the registered
// `fastgen::` ops (fastgen/ops/eager_native.py chooses): these are for eager calls only.
//
// Each computes exactly what the `fastgen::` op's native branch computes, with the same sub-ops in the same
// order (bit for bit the same outputs and gradients, tested). The sub-ops are called through the dispatcher,
// so fake and meta tensors (torch.library.opcheck) flow through the fake kernels of fastgen/ops/native.py.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace fastgen_native {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <class Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

at::Tensor epilogue_forward(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            const at::Tensor& key, double negative_slope, double p) {
  static auto epilogue = op<void(at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, double, double)>(
      "fastgen_native::leaky_relu_dropout_");
  at::Tensor y = at::mm(x, weight.t());
  epilogue.call(y, bias, key, negative_slope, p);  // bias, activation, mask, in place
  return y;
}

struct LinearLeakyReLUDropout : public torch::autograd::Function<LinearLeakyReLUDropout> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& key, double negative_slope,
                            double p) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = epilogue_forward(x, weight, bias, key, negative_slope, p);
    ctx->save_for_backward({x, weight, y, key});  // no pre-activation, no mask
    ctx->saved_data["negative_slope"] = negative_slope;
    ctx->saved_data["p"] = p;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto grad_pre_op = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double)>(
        "fastgen_native::leaky_relu_dropout_grad_pre");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &y = saved[2], &key = saved[3];
    const at::Tensor grad_pre = grad_pre_op.call(grads[0].contiguous(), y, key, ctx->saved_data["negative_slope"].toDouble(),
                                                 ctx->saved_data["p"].toDouble());
    return {ctx->needs_input_grad(0) ? grad_pre.mm(weight) : at::Tensor(),
            ctx->needs_input_grad(1) ? grad_pre.t().mm(x) : at::Tensor(),
            ctx->needs_input_grad(2) ? grad_pre.sum(0) : at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor reparameterize_forward(const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
                                  const at::Tensor& key) {
  static auto forward_op = op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         const at::Tensor&)>("fastgen_native::reparameterize");
  return forward_op.call(mu, logvar, eps, key);
}

struct Reparameterize : public torch::autograd::Function<Reparameterize> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                            const std::optional<at::Tensor>& eps, const at::Tensor& key) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["has_eps"] = eps.has_value();
    ctx->save_for_backward({logvar, eps.has_value() ? *eps : logvar, key});
    return reparameterize_forward(mu, logvar, eps, key);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto grad_logvar_op = op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                               const at::Tensor&)>("fastgen_native::reparameterize_grad_logvar");
    const auto saved = ctx->get_saved_variables();
    const bool has_eps = ctx->saved_data["has_eps"].toBool();
    const at::Tensor &logvar = saved[0], &key = saved[2];
    const std::optional<at::Tensor> eps = has_eps ? std::optional<at::Tensor>(saved[1]) : std::nullopt;
    const at::Tensor grad_z = grads[0].contiguous();
    return {grad_z,
            ctx->needs_input_grad(1) ? grad_logvar_op.call(grad_z, logvar, eps, key) : at::Tensor(),
            has_eps && ctx->needs_input_grad(2) ? grad_z * at::exp(0.5 * logvar) : at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor bce_kl_forward(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& mu,
                          const at::Tensor& logvar) {
  static auto forward_op = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "fastgen_native::bce_kl_loss");
  return forward_op.call(logits, target, mu, logvar);
}

struct BCEKLLoss : public torch::autograd::Function<BCEKLLoss> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target,
                            const at::Tensor& mu, const at::Tensor& logvar) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({logits, target, mu, logvar});
    return bce_kl_forward(logits, target, mu, logvar);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto backward_op = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "fastgen_native::bce_kl_loss_backward");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &target = saved[1], &mu = saved[2], &logvar = saved[3];
    const at::Tensor grad_loss = grads[0].to(at::kFloat).contiguous();
    auto [grad_logits, grad_mu, grad_logvar] = backward_op.call(grad_loss, logits, target, mu, logvar);
    at::Tensor grad_target;
    if (ctx->needs_input_grad(1)) grad_target = (-grad_loss.unsqueeze(1) * logits.to(at::kFloat)).to(target.scalar_type());
    return {grad_logits, grad_target, grad_mu, grad_logvar};
  }
};

at::Tensor fused_linear_leaky_relu_dropout(const at::Tensor& x, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias, const at::Tensor& key,
                                           double negative_slope, double p) {
  return LinearLeakyReLUDropout::apply(x, weight, bias, key, negative_slope, p);
}

at::Tensor fused_reparameterize(const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
                                const at::Tensor& key) {
  return Reparameterize::apply(mu, logvar, eps, key);
}

at::Tensor fused_bce_kl_loss(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& mu,
                             const at::Tensor& logvar) {
  return BCEKLLoss::apply(logits, target, mu, logvar);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgen_native, Autograd, m) {
  m.impl("fused_linear_leaky_relu_dropout", &fused_linear_leaky_relu_dropout);
  m.impl("fused_reparameterize", &fused_reparameterize);
  m.impl("fused_bce_kl_loss", &fused_bce_kl_loss);
}

// Below autograd (no input needs a gradient, or inference mode): the forward alone.
TORCH_LIBRARY_IMPL(fastgen_native, CPU, m) {
  m.impl("fused_linear_leaky_relu_dropout", &epilogue_forward);
  m.impl("fused_reparameterize", &reparameterize_forward);
  m.impl("fused_bce_kl_loss", &bce_kl_forward);
}

}  // namespace fastgen_native
