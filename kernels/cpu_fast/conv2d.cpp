#include "kernels/cpu_fast/conv2d.h"

#include <dnnl.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/cpu_fast/vector_ops.h"

namespace ddpm::cpu_fast {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// Everything oneDNN needs for one convolution shape, made once.
struct Plan {
  memory::desc x, w_user, y, bias;
  dnnl::convolution_forward::primitive_desc fwd;
  dnnl::convolution_backward_data::primitive_desc bwd_data;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights;
  // reorders between our weight layout and the ones the primitives chose
  dnnl::reorder w_to_fwd, w_to_bwd_data, dw_from_bwd;
  // scratch, sized once: the weights as each primitive wants them, the weight and bias
  // gradients as oneDNN writes them before they are added to ours
  std::vector<float> w_fwd, w_bwd, dw_prim, dw_user, db;
};

// dx before it is added to the caller's: one buffer for every shape (calls are sequential),
// not one per shape, which at batch 128 would hold ~0.5 GB of activations.
std::vector<float>& dx_scratch(size_t floats) {
  static std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer;
}

std::vector<float> buffer_for(const memory::desc& d) {
  return std::vector<float>(d.get_size() / sizeof(float) + 1);
}

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int, int, int>;

Key key_of(const Conv2dShape& s) {
  return {s.n, s.h, s.w, s.c_in, s.c_out, s.kh, s.kw, s.stride, s.pad_top, s.pad_left,
          s.pad_bottom, s.pad_right};
}

Plan& plan_for(const Conv2dShape& s) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Plan>& p = plans[key_of(s)];
  if (p) return *p;
  p = std::make_unique<Plan>();
  dnnl::engine& eng = cpu_engine();
  const memory::dims x_dims{s.n, s.c_in, s.h, s.w}, w_dims{s.c_out, s.c_in, s.kh, s.kw};
  const memory::dims y_dims{s.n, s.c_out, s.out_h(), s.out_w()}, b_dims{s.c_out};
  const memory::dims strides{s.stride, s.stride}, pad_l{s.pad_top, s.pad_left},
      pad_r{s.pad_bottom, s.pad_right};
  p->x = memory::desc(x_dims, kF32, Tag::nhwc);
  p->y = memory::desc(y_dims, kF32, Tag::nhwc);
  p->w_user = memory::desc(w_dims, kF32, Tag::hwio);
  p->bias = memory::desc(b_dims, kF32, Tag::x);
  const memory::desc w_any(w_dims, kF32, Tag::any);
  p->fwd = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                      dnnl::algorithm::convolution_direct, p->x, w_any, p->bias,
                                      p->y, strides, pad_l, pad_r),
      eng);
  p->bwd_data = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, p->x, w_any,
                                            p->y, strides, pad_l, pad_r),
      eng, p->fwd);
  p->bwd_weights = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, p->x, w_any,
                                               p->bias, p->y, strides, pad_l, pad_r),
      eng, p->fwd);
  p->w_to_fwd = dnnl::reorder(dnnl::reorder::primitive_desc(eng, p->w_user, eng, p->fwd.weights_desc()));
  p->w_to_bwd_data =
      dnnl::reorder(dnnl::reorder::primitive_desc(eng, p->w_user, eng, p->bwd_data.weights_desc()));
  p->dw_from_bwd = dnnl::reorder(
      dnnl::reorder::primitive_desc(eng, p->bwd_weights.diff_weights_desc(), eng, p->w_user));
  p->w_fwd = buffer_for(p->fwd.weights_desc());
  p->w_bwd = buffer_for(p->bwd_data.weights_desc());
  p->dw_prim = buffer_for(p->bwd_weights.diff_weights_desc());
  p->dw_user = buffer_for(p->w_user);
  p->db.assign(static_cast<size_t>(s.c_out), 0.0f);
  return *p;
}

memory wrap(const memory::desc& d, const float* data) {
  return memory(d, cpu_engine(), const_cast<float*>(data));
}

// The weights as primitive `wanted` takes them: ours when that is the layout, else
// reordered into `buffer`.
memory weights_for(const Plan& p, const memory::desc& wanted, const dnnl::reorder& to_wanted,
                   const float* w, std::vector<float>& buffer, dnnl::stream& stream) {
  if (wanted == p.w_user) return wrap(p.w_user, w);
  memory ours = wrap(p.w_user, w), m = wrap(wanted, buffer.data());
  to_wanted.execute(stream, ours, m);
  return m;
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y) {
  Plan& p = plan_for(s);
  dnnl::stream stream(cpu_engine());
  const memory w_prim = weights_for(p, p.fwd.weights_desc(), p.w_to_fwd, w, p.w_fwd, stream);
  std::vector<float> zeros;
  if (b == nullptr) zeros.assign(static_cast<size_t>(s.c_out), 0.0f);
  dnnl::convolution_forward(p.fwd).execute(
      stream, {{DNNL_ARG_SRC, wrap(p.x, x)},
               {DNNL_ARG_WEIGHTS, w_prim},
               {DNNL_ARG_BIAS, wrap(p.bias, b ? b : zeros.data())},
               {DNNL_ARG_DST, wrap(p.y, y)}});
  stream.wait();
}

void conv2d_backward(const Conv2dShape& s, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, GradWrite dx_write) {
  Plan& p = plan_for(s);
  dnnl::stream stream(cpu_engine());
  if (dx) {
    const memory w_prim =
        weights_for(p, p.bwd_data.weights_desc(), p.w_to_bwd_data, w, p.w_bwd, stream);
    const int64_t count = s.n * s.h * s.w * s.c_in;
    const bool add = dx_write == GradWrite::Accumulate;  // else oneDNN writes dx itself
    float* dx_new = add ? dx_scratch(static_cast<size_t>(count)).data() : dx;
    dnnl::convolution_backward_data(p.bwd_data).execute(
        stream, {{DNNL_ARG_DIFF_DST, wrap(p.y, dy)},
                 {DNNL_ARG_WEIGHTS, w_prim},
                 {DNNL_ARG_DIFF_SRC, wrap(p.x, dx_new)}});
    stream.wait();
    if (add) add_into(dx, dx_new, count);
  }
  if (dw || db) {
    const memory::desc& dwd = p.bwd_weights.diff_weights_desc();
    dnnl::convolution_backward_weights(p.bwd_weights).execute(
        stream, {{DNNL_ARG_SRC, wrap(p.x, x)},
                 {DNNL_ARG_DIFF_DST, wrap(p.y, dy)},
                 {DNNL_ARG_DIFF_WEIGHTS, wrap(dwd, p.dw_prim.data())},
                 {DNNL_ARG_DIFF_BIAS, wrap(p.bias, p.db.data())}});
    const bool plain = dwd == p.w_user;
    if (dw && !plain) {
      memory from = wrap(dwd, p.dw_prim.data()), to = wrap(p.w_user, p.dw_user.data());
      p.dw_from_bwd.execute(stream, from, to);
    }
    stream.wait();
    if (dw)
      add_into(dw, plain ? p.dw_prim.data() : p.dw_user.data(),
               static_cast<int64_t>(s.kh) * s.kw * s.c_in * s.c_out);
    if (db) add_into(db, p.db.data(), s.c_out);
  }
}

}  // namespace ddpm::cpu_fast
