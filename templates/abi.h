// attnjit kernel ABI: the argument block every generated attention kernel takes by value.
//
// This one file is compiled into the host library (runtime/) and pasted verbatim into
// every generated CUDA translation unit, so host and device agree on the layout by
// construction. Plain C types only: it must compile under NVRTC with no headers.
#ifndef ATTNJIT_ABI_H
#define ATTNJIT_ABI_H

#define ATTNJIT_MAX_PARAMS 16
#define ATTNJIT_MAX_TENSORS 8

// A captured tensor as the kernel sees it: base pointer and strides in elements.
struct AttnjitTensorArg {
  const void* data;
  long long stride[4];
  int size[4];
};

// Strides are in elements. Q/O: [batch, heads_q, seq_q, head_dim];
// K/V: [batch, heads_kv, seq_k, head_dim]; the head_dim stride is 1.
struct AttnjitFwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // [batch, heads_q, seq_q], contiguous; natural log; may be null

  long long q_stride[3];  // batch, head, seq
  long long k_stride[3];
  long long v_stride[3];
  long long o_stride[3];

  int batch;
  int heads_q;
  int heads_kv;
  int seq_q;
  int seq_k;

  float scale;       // softmax scale applied to q.k
  float scale_log2;  // scale * log2(e)

  int int_params[ATTNJIT_MAX_PARAMS];
  float float_params[ATTNJIT_MAX_PARAMS];
  struct AttnjitTensorArg tensors[ATTNJIT_MAX_TENSORS];
};

#endif  // ATTNJIT_ABI_H
