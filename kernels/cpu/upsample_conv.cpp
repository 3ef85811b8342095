#include "kernels/cpu/upsample_conv.h"

#include "kernels/upsample_conv.h"

namespace ddpm::cpu {

template <class T>
void fold_upsample_weights(int64_t cin_cout, const T* w, T* const (&w4)[4]) {
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int th = 0; th < 2; ++th)
        for (int tw = 0; tw < 2; ++tw) {
          T* dst = w4[2 * a + b] + (th * 2 + tw) * cin_cout;
          for (int64_t e = 0; e < cin_cout; ++e)
            dst[e] = folded_weight(w, cin_cout, a, b, th, tw, e);
        }
}

template <class T>
void unfold_upsample_gradients(int64_t cin_cout, const T* const (&dw4)[4], T* dw) {
  for (int kh = 0; kh < 3; ++kh)
    for (int kw = 0; kw < 3; ++kw) {
      T* dst = dw + (kh * 3 + kw) * cin_cout;
      for (int64_t e = 0; e < cin_cout; ++e) dst[e] += unfolded_gradient(dw4, cin_cout, kh, kw, e);
    }
}

#define INSTANTIATE(T)                                                       \
  template void fold_upsample_weights<T>(int64_t, const T*, T* const(&)[4]); \
  template void unfold_upsample_gradients<T>(int64_t, const T* const(&)[4], T*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace ddpm::cpu
