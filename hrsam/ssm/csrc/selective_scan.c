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

/* Inference of the whole cycle-scan mix (CycleScan.mix in hrsam/ssm/cycle_scan.py) in one pass,
 * token-major, without the R-fold copies of the inputs:
 *
 *   u (B, L, .) row stride su; dt (B, L, .) raw step sizes, row stride sdt (bias and softplus
 *   are applied here); Bm, Cm (B, L, .) row stride sbc; A (D, N); Dv, bias (D,); gamma (D, R);
 *   out (B, L, D) contiguous.
 *
 * The sequence is traversed R times with the state carried across the repeats, and
 * out_t = sum_r gamma_r (h_{r,t} . C_t + D u_t). TILE channels run together so a step's B_t and
 * C_t, and the tile's slice of each row, are read once per tile rather than once per channel:
 * the per-channel kernel above streams all of B and C once per channel, which leaves the cache
 * at high resolution (50 MB at 4096 px, R = 3). */
#define TILE 32
#define PREFETCH 8

void hrsam_cycle_scan_infer(int nb, int nd, int L, int N, int R, int threads, const float *u,
                            long su, const float *dt, long sdt, const float *Bm, const float *Cm,
                            long sbc, const float *A, const float *Dv, const float *bias,
                            const float *gamma, float *out) {
  int tiles = (nd + TILE - 1) / TILE;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (long item = 0; item < (long)nb * tiles; item++) {
    long b = item / tiles;
    int d0 = (int)(item % tiles) * TILE;
    int G = nd - d0 < TILE ? nd - d0 : TILE;
    float h[TILE * MAX_N]; /* channel g's state at h + g * N: packed, so the tile stays in L1 */
    memset(h, 0, sizeof(float) * TILE * N);
    for (int r = 0; r < R; r++) {
      for (long t = 0; t < L; t++) {
        long row = b * L + t;
        const float *ur = u + row * su + d0, *dr = dt + row * sdt + d0;
        const float *bt = Bm + row * sbc, *ct = Cm + row * sbc;
        float *o = out + row * nd + d0;
        if (t + PREFETCH < L) { /* rows are far apart: hardware prefetchers do not follow them */
          long ahead = row + PREFETCH;
          __builtin_prefetch(u + ahead * su + d0);
          __builtin_prefetch(dt + ahead * sdt + d0);
          __builtin_prefetch(Bm + ahead * sbc);
          __builtin_prefetch(Cm + ahead * sbc);
          __builtin_prefetch(out + ahead * nd + d0, 1);
        }
        float dts[TILE];
#pragma omp simd
        for (int g = 0; g < G; g++) { /* softplus with torch's threshold, vectorized over g */
          float z = dr[g] + bias[d0 + g];
          dts[g] = z > 20.f ? z : logf(1.f + expf(z));
        }
        for (int g = 0; g < G; g++) {
          int d = d0 + g;
          float delta = dts[g], x = delta * ur[g], y = 0.f;
          const float *a = A + (long)d * N;
          float *hg = h + g * N;
#pragma omp simd reduction(+ : y)
          for (int n = 0; n < N; n++) {
            float hn = expf(delta * a[n]) * hg[n] + x * bt[n];
            hg[n] = hn;
            y += hn * ct[n];
          }
          y = gamma[(long)d * R + r] * (y + Dv[d] * ur[g]);
          o[g] = r ? o[g] + y : y;
        }
      }
    }
  }
}
