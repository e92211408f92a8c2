/* Fused CPU selective scan: forward and reverse-time backward (hrsam/ssm/cpu_scan.py).
 *
 * Layouts (float32, contiguous): u, dl, out, du, ddl (B, D, L); A (D, N); Bt, Ct (B, L, N);
 * Dv (D,); ckpt (B, D, n_chunks, N). dl is the step size after bias and softplus.
 *
 *   h_t = exp(dl_t A) * h_{t-1} + dl_t u_t B_t      y_t = h_t . C_t + D u_t
 *
 * Channels run in parallel (OpenMP); the loop over the N states is a SIMD loop, so expf is
 * vectorized through glibc's libmvec under -ffast-math. The state lives in a local array; the
 * forward stores it every `chunk` steps so the backward can recompute each chunk's states
 * instead of keeping (L, D, N) of them.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MAX_N 256

int hrsam_scan_max_state(void) { return MAX_N; }

void hrsam_scan_fwd(int nb, int nd, int L, int N, int chunk, int threads, const float *u,
                    const float *dl, const float *A, const float *Bt, const float *Ct,
                    const float *Dv, float *out, float *ckpt) {
  int n_chunks = (L + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (long item = 0; item < (long)nb * nd; item++) {
    long b = item / nd, d = item % nd;
    float h[MAX_N];
    memset(h, 0, sizeof(float) * N);
    const float *a = A + d * N, *up = u + item * L, *dp = dl + item * L;
    float *ck = ckpt + item * (long)n_chunks * N;
    for (long t = 0; t < L; t++) {
      if (t % chunk == 0) memcpy(ck + (t / chunk) * N, h, sizeof(float) * N);
      float dt = dp[t], x = dt * up[t], y = 0.f;
      const float *bt = Bt + (b * L + t) * N, *ct = Ct + (b * L + t) * N;
#pragma omp simd reduction(+ : y)
      for (int n = 0; n < N; n++) {
        float hn = expf(dt * a[n]) * h[n] + x * bt[n];
        h[n] = hn;
        y += hn * ct[n];
      }
      out[item * L + t] = y + Dv[d] * up[t];
    }
  }
}

/* Adjoint: g_t = dy_t C_t + a_{t+1} g_{t+1}; see hrsam/ssm/cpu_scan.py for the formulas.
 * Sums over channels (dB, dC) go to one buffer per thread: dB_part, dC_part (threads, B, L, N). */
void hrsam_scan_bwd(int nb, int nd, int L, int N, int chunk, int threads, const float *u,
                    const float *dl, const float *A, const float *Bt, const float *Ct,
                    const float *Dv, const float *dy, const float *ckpt, float *du, float *ddl,
                    float *dA_part, float *dD_part, float *dB_part, float *dC_part) {
  int n_chunks = (L + chunk - 1) / chunk;
  long n_items = (long)nb * nd;
#pragma omp parallel num_threads(threads)
  {
    int g = omp_get_thread_num(), G = omp_get_num_threads();
    float *hs = (float *)malloc(sizeof(float) * (chunk + 1) * N);
    float adj[MAX_N];
    float *dBg = dB_part + (long)g * nb * L * N, *dCg = dC_part + (long)g * nb * L * N;
    for (long item = g; item < n_items; item += G) {
      long b = item / nd, d = item % nd;
      const float *a = A + d * N, *up = u + item * L, *dp = dl + item * L, *gp = dy + item * L;
      const float *ck = ckpt + item * (long)n_chunks * N;
      float *dA = dA_part + item * N;
      float dD_acc = 0.f;
      memset(adj, 0, sizeof(float) * N);
      for (int c = n_chunks - 1; c >= 0; c--) {
        long t0 = (long)c * chunk, t1 = t0 + chunk < L ? t0 + chunk : L;
        memcpy(hs, ck + (long)c * N, sizeof(float) * N); /* hs[0] = state before the chunk */
        for (long t = t0; t < t1; t++) {
          float dt = dp[t], x = dt * up[t];
          const float *bt = Bt + (b * L + t) * N;
          float *hp = hs + (t - t0) * N, *hn = hp + N;
#pragma omp simd
          for (int n = 0; n < N; n++) hn[n] = expf(dt * a[n]) * hp[n] + x * bt[n];
        }
        for (long t = t1 - 1; t >= t0; t--) {
          float dt = dp[t], ut = up[t], gy = gp[t];
          const float *bt = Bt + (b * L + t) * N, *ct = Ct + (b * L + t) * N;
          const float *hcur = hs + (t - t0 + 1) * N, *hprev = hcur - N;
          float *dBt = dBg + (b * L + t) * N, *dCt = dCg + (b * L + t) * N;
          float du_acc = 0.f, ddt = 0.f;
          dD_acc += gy * ut;
#pragma omp simd reduction(+ : du_acc, ddt)
          for (int n = 0; n < N; n++) {
            float an = expf(dt * a[n]);
            float gn = adj[n] + gy * ct[n];
            dCt[n] += gy * hcur[n];
            dBt[n] += gn * dt * ut;
            dA[n] += gn * hprev[n] * an * dt;
            ddt += gn * (hprev[n] * an * a[n] + ut * bt[n]);
            du_acc += gn * dt * bt[n];
            adj[n] = gn * an;
          }
          du[item * L + t] = du_acc + Dv[d] * gy;
          ddl[item * L + t] = ddt;
        }
      }
      dD_part[item] = dD_acc;
    }
    free(hs);
  }
}

/* The whole cycle-scan mix (CycleScan.mix in hrsam/ssm/cycle_scan.py), forward and backward,
 * token-major, without the R-fold copies of the inputs:
 *
 *   u (B, L, .) row stride su; dt (B, L, .) raw step sizes, row stride sdt (bias and softplus
 *   are applied here); Bm, Cm (B, L, .) row stride sbc; A (D, N); Dv, bias (D,); gamma (D, R);
 *   out (B, L, D) contiguous.
 *
 * The sequence is traversed R times with the state carried across the repeats (step
 * s = r L + t), and out_t = sum_r gamma_r (h_s . C_t + D u_t).
 *
 * A tile of W channels (W = `lanes`, 16 or 32) runs in the lanes of the vector loops: the tile's
 * state and its slice of A are laid out [n][g], so a step reads B_t and C_t once per tile as
 * scalars, the sum over states y = h . C is lane-wise, and no horizontal sum is needed. (The
 * per-channel kernels above stream all of B and C once per channel, which leaves the cache at
 * high resolution, and reduce over N = 8 states in a single vector.) */
#define PREFETCH 8
#define MAX_W 32
#define INLINE static inline __attribute__((always_inline))

/* Forward. For training (both NULL for inference): delta (B, L, D) receives the step sizes after
 * bias and softplus, and ckpt (B, n_chunks, tiles, N, W), n_chunks = ceil(R L / chunk), each
 * tile's state before every chunk-th step, for hrsam_cycle_scan_bwd with the same lanes. */
INLINE void cycle_fwd(int nb, int nd, int L, int N, int R, int chunk, int threads,
                      const float *u, long su, const float *dt, long sdt, const float *Bm,
                      const float *Cm, long sbc, const float *A, const float *Dv,
                      const float *bias, const float *gamma, float *out, float *delta,
                      float *ckpt, const int W) {
  int tiles = (nd + W - 1) / W;
  long n_chunks = ((long)R * L + chunk - 1) / chunk, SN = (long)N * W;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (long item = 0; item < (long)nb * tiles; item++) {
    long b = item / tiles;
    int tile = (int)(item % tiles), d0 = tile * W;
    int G = nd - d0 < W ? nd - d0 : W;
    float h[MAX_W * MAX_N], aT[MAX_W * MAX_N], bi[MAX_W], dv[MAX_W];
    memset(h, 0, sizeof(float) * SN);
    memset(aT, 0, sizeof(float) * SN);
    for (int g = 0; g < G; g++) {
      for (int n = 0; n < N; n++) aT[n * W + g] = A[(long)(d0 + g) * N + n];
      bi[g] = bias[d0 + g];
      dv[g] = Dv[d0 + g];
    }
    for (int r = 0; r < R; r++) {
      float gm[MAX_W];
      for (int g = 0; g < G; g++) gm[g] = gamma[(long)(d0 + g) * R + r];
      for (long t = 0; t < L; t++) {
        long row = b * L + t, s = (long)r * L + t;
        const float *ur = u + row * su + d0, *dr = dt + row * sdt + d0;
        const float *bt = Bm + row * sbc, *ct = Cm + row * sbc;
        float *o = out + row * nd + d0;
        if (ckpt && s % chunk == 0)
          memcpy(ckpt + ((b * n_chunks + s / chunk) * tiles + tile) * SN, h, sizeof(float) * SN);
        if (t + PREFETCH < L) { /* rows are far apart: hardware prefetchers do not follow them */
          long ahead = row + PREFETCH;
          __builtin_prefetch(u + ahead * su + d0);
          __builtin_prefetch(dt + ahead * sdt + d0);
          __builtin_prefetch(Bm + ahead * sbc);
          __builtin_prefetch(Cm + ahead * sbc);
          __builtin_prefetch(out + ahead * nd + d0, 1);
        }
        float dl[MAX_W], x[MAX_W], y[MAX_W];
#pragma omp simd
        for (int g = 0; g < G; g++) { /* softplus with torch's threshold */
          float z = dr[g] + bi[g];
          dl[g] = z > 20.f ? z : logf(1.f + expf(z));
          x[g] = dl[g] * ur[g];
          y[g] = 0.f;
        }
        if (delta && r == 0) memcpy(delta + row * nd + d0, dl, sizeof(float) * G);
        for (int n = 0; n < N; n++) {
          float bn = bt[n], cn = ct[n], *hn = h + n * W;
          const float *an = aT + n * W;
#pragma omp simd
          for (int g = 0; g < G; g++) {
            float v = expf(dl[g] * an[g]) * hn[g] + x[g] * bn;
            hn[g] = v;
            y[g] += v * cn;
          }
        }
        for (int g = 0; g < G; g++) {
          float v = gm[g] * (y[g] + dv[g] * ur[g]);
          o[g] = r ? o[g] + v : v;
        }
      }
    }
  }
}

void hrsam_cycle_scan_fwd(int nb, int nd, int L, int N, int R, int chunk, int threads,
                          int lanes, const float *u, long su, const float *dt, long sdt,
                          const float *Bm, const float *Cm, long sbc, const float *A,
                          const float *Dv, const float *bias, const float *gamma, float *out,
                          float *delta, float *ckpt) {
  if (lanes == 32)
    cycle_fwd(nb, nd, L, N, R, chunk, threads, u, su, dt, sdt, Bm, Cm, sbc, A, Dv, bias, gamma,
              out, delta, ckpt, 32);
  else
    cycle_fwd(nb, nd, L, N, R, chunk, threads, u, su, dt, sdt, Bm, Cm, sbc, A, Dv, bias, gamma,
              out, delta, ckpt, 16);
}

/* Adjoint of the forward, from its delta and ckpt and dout (B, L, D) contiguous. With s running
 * backwards over the R-fold sequence, g_s = gamma_r dout_t C_t + a_{s+1} g_{s+1} (the
 * recurrence of hrsam_scan_bwd), and
 *
 *   du_t     = sum_r (delta_t sum_n g_s B_t + D gamma_r dout_t)
 *   ddelta_t = sum_r sum_n g_s (h_{s-1} a_s A + u_t B_t)      ddt_t = ddelta_t softplus'(z_t)
 *   dgamma_r = sum_t dout_t (h_s . C_t + D u_t)                dbias = sum_t ddt_t
 *
 * The sums over states are lane-wise; only dB_t and dC_t (sums over channels) take a horizontal
 * sum, once per state and step. A chunk's states are recomputed from its checkpoint with their
 * decays a_s kept beside them, so expf runs once per state and step.
 *
 * Each (batch, tile) item is one thread's alone, so du (B, L, D) contiguous, the dt columns of
 * dproj (row stride sdp; zero on entry, they accumulate ddelta first) and the per-batch sums
 * dA (B, D, N), dD, dbias (B, D) and dgamma (B, D, R) need no atomics. The sums over channels
 * of dB and dC go to one buffer per thread, dBC_part (threads, B, L, 2N): dB in the first N of
 * a row, dC in the last N; zero on entry. Threads take items round-robin, so the float sums are
 * the same from run to run for a given thread count. */
INLINE void cycle_bwd(int nb, int nd, int L, int N, int R, int chunk, int threads,
                      const float *u, long su, const float *dt, long sdt, const float *Bm,
                      const float *Cm, long sbc, const float *A, const float *Dv,
                      const float *bias, const float *gamma, const float *delta,
                      const float *ckpt, const float *dout, float *du, float *dproj, long sdp,
                      float *dA, float *dD, float *dbias, float *dgamma, float *dBC_part,
                      const int W) {
  int tiles = (nd + W - 1) / W;
  long total = (long)R * L, n_chunks = (total + chunk - 1) / chunk;
  long n_items = (long)nb * tiles, SN = (long)N * W; /* floats of one step's [n][g] block */
  long n_work = 3 * SN + (2L * R + 2) * W;
#pragma omp parallel num_threads(threads)
  {
    int th = omp_get_thread_num(), T = omp_get_num_threads();
    float *hs = (float *)malloc(sizeof(float) * (chunk + 1) * SN); /* h_{s0-1} .. h_{s1-1} */
    float *as = (float *)malloc(sizeof(float) * chunk * SN);       /* a_{s0} .. a_{s1-1} */
    float *work = (float *)malloc(sizeof(float) * n_work);
    float *aT = work, *adj = work + SN, *dAl = work + 2 * SN; /* [n][g] */
    float *gam = work + 3 * SN, *dgam = gam + (long)R * W;    /* [r][g] */
    float *dDl = dgam + (long)R * W, *dbl = dDl + W;
    float *dBC = dBC_part + (long)th * nb * L * 2 * N;
    for (long item = th; item < n_items; item += T) {
      long b = item / tiles;
      int tile = (int)(item % tiles), d0 = tile * W;
      int G = nd - d0 < W ? nd - d0 : W;
      memset(work, 0, sizeof(float) * n_work);
      for (int g = 0; g < G; g++) {
        for (int n = 0; n < N; n++) aT[n * W + g] = A[(long)(d0 + g) * N + n];
        for (int r = 0; r < R; r++) gam[r * W + g] = gamma[(long)(d0 + g) * R + r];
      }
      for (long k = n_chunks - 1; k >= 0; k--) {
        long s0 = k * chunk, s1 = s0 + chunk < total ? s0 + chunk : total;
        memcpy(hs, ckpt + ((b * n_chunks + k) * tiles + tile) * SN, sizeof(float) * SN);
        for (long s = s0; s < s1; s++) { /* recompute: hs[s - s0 + 1] = h_s, as[s - s0] = a_s */
          long row = b * L + s % L;
          const float *ur = u + row * su + d0, *dl = delta + row * nd + d0;
          const float *bt = Bm + row * sbc, *hp = hs + (s - s0) * SN;
          float *hn = hs + (s - s0 + 1) * SN, *an = as + (s - s0) * SN, x[MAX_W];
          for (int g = 0; g < G; g++) x[g] = dl[g] * ur[g];
          for (int n = 0; n < N; n++) {
            float bn = bt[n];
            const float *ap = aT + n * W, *hpn = hp + n * W;
            float *hnn = hn + n * W, *ann = an + n * W;
#pragma omp simd
            for (int g = 0; g < G; g++) {
              float a = expf(dl[g] * ap[g]);
              ann[g] = a;
              hnn[g] = a * hpn[g] + x[g] * bn;
            }
          }
        }
        for (long s = s1 - 1; s >= s0; s--) {
          long t = s % L, row = b * L + t;
          int r = (int)(s / L);
          const float *ur = u + row * su + d0, *dl = delta + row * nd + d0;
          const float *bt = Bm + row * sbc, *ct = Cm + row * sbc, *go = dout + row * nd + d0;
          const float *hcur = hs + (s - s0 + 1) * SN, *hprev = hcur - SN, *an = as + (s - s0) * SN;
          float *dst = dBC + row * 2 * N;
          float gy[MAX_W], x[MAX_W], gb[MAX_W], gha[MAX_W], y[MAX_W];
          for (int g = 0; g < G; g++) {
            gy[g] = gam[r * W + g] * go[g];
            x[g] = dl[g] * ur[g];
            gb[g] = gha[g] = y[g] = 0.f;
          }
          for (int n = 0; n < N; n++) {
            float bn = bt[n], cn = ct[n], sb = 0.f, sc = 0.f;
            const float *ap = aT + n * W, *hc = hcur + n * W, *hp = hprev + n * W;
            const float *ann = an + n * W;
            float *ad = adj + n * W, *da = dAl + n * W;
#pragma omp simd reduction(+ : sb, sc)
            for (int g = 0; g < G; g++) {
              float gn = ad[g] + gy[g] * cn; /* g_s */
              float ha = hp[g] * ann[g];
              da[g] += gn * ha * dl[g];
              gha[g] += gn * ha * ap[g];
              gb[g] += gn * bn;
              y[g] += hc[g] * cn;
              ad[g] = gn * ann[g]; /* a_s g_s, for step s - 1 */
              sb += gn * x[g];
              sc += gy[g] * hc[g];
            }
            dst[n] += sb;
            dst[N + n] += sc;
          }
          float *dur = du + row * nd + d0, *ddr = dproj + row * sdp + d0, *dgr = dgam + r * W;
          for (int g = 0; g < G; g++) {
            float dv = Dv[d0 + g];
            dur[g] += dl[g] * gb[g] + dv * gy[g];
            ddr[g] += gha[g] + ur[g] * gb[g];
            dDl[g] += gy[g] * ur[g];
            dgr[g] += go[g] * (y[g] + dv * ur[g]);
          }
        }
      }
      for (long t = 0; t < L; t++) { /* through softplus: ddt = ddelta sigmoid(z), z <= 20 */
        long row = b * L + t;
        const float *dr = dt + row * sdt + d0;
        float *ddr = dproj + row * sdp + d0;
        for (int g = 0; g < G; g++) {
          float z = dr[g] + bias[d0 + g];
          float v = z > 20.f ? ddr[g] : ddr[g] / (1.f + expf(-z));
          ddr[g] = v;
          dbl[g] += v;
        }
      }
      for (int g = 0; g < G; g++) {
        long bd = b * nd + d0 + g;
        for (int n = 0; n < N; n++) dA[bd * N + n] = dAl[n * W + g];
        for (int r = 0; r < R; r++) dgamma[bd * R + r] = dgam[r * W + g];
        dD[bd] = dDl[g];
        dbias[bd] = dbl[g];
      }
    }
    free(hs);
    free(as);
    free(work);
  }
}

void hrsam_cycle_scan_bwd(int nb, int nd, int L, int N, int R, int chunk, int threads,
                          int lanes, const float *u, long su, const float *dt, long sdt,
                          const float *Bm, const float *Cm, long sbc, const float *A,
                          const float *Dv, const float *bias, const float *gamma,
                          const float *delta, const float *ckpt, const float *dout, float *du,
                          float *dproj, long sdp, float *dA, float *dD, float *dbias,
                          float *dgamma, float *dBC_part) {
  if (lanes == 32)
    cycle_bwd(nb, nd, L, N, R, chunk, threads, u, su, dt, sdt, Bm, Cm, sbc, A, Dv, bias, gamma,
              delta, ckpt, dout, du, dproj, sdp, dA, dD, dbias, dgamma, dBC_part, 32);
  else
    cycle_bwd(nb, nd, L, N, R, chunk, threads, u, su, dt, sdt, Bm, Cm, sbc, A, Dv, bias, gamma,
              delta, ckpt, dout, du, dproj, sdp, dA, dD, dbias, dgamma, dBC_part, 16);
}
