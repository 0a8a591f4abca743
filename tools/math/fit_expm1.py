# The polynomial q in expm1(r) = r * q(r), |r| <= ln2 / 2, used by the CPU hooks' tanh
# (compiler/llvm/llvm_math.cpp): least squares reweighted toward the largest relative error
# (Lawson's iteration, which converges on the minimax fit), then the coefficients rounded to float
# and the error re-measured. Needs numpy. Prints degree, fitted error, error with float
# coefficients, and the coefficients.
import numpy as np
h = np.log(2)/2
r = np.linspace(-h, h, 20001); r = r[r != 0]
f = np.expm1(r)/r
for deg in [4,5,6]:
    w = np.ones_like(r)
    for it in range(200):
        A = r[:,None]**np.arange(deg+1)[None,:]
        c, *_ = np.linalg.lstsq(A*(w/f)[:,None], f*w/f, rcond=None)
        err = np.abs(A@c - f)/f
        w = w*(err/err.max())**0.5; w/=w.mean()
    cf = c.astype(np.float32).astype(np.float64)
    e2 = np.abs((r[:,None]**np.arange(deg+1)[None,:])@cf - f)/f
    print(deg, "max rel %.3e"%err.max(), "float coeffs %.3e"%e2.max(), repr(c.astype(np.float32).tolist()))
