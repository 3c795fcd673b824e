/*
 * kdumptool._pagezip: a zlib (RFC 1950/1951) encoder made for one page at a time.
 *
 * A general deflate library pays a fixed cost on every call that does not depend on the
 * input (libdeflate clears a 128 KiB hash table: ~7 us of the ~17 us a 4 KiB page costs).
 * A dump page is at most 64 KiB, so this encoder keeps a small table and clears only it.
 *
 * The method: greedy LZ77 with one hash bucket per 4-byte prefix (matches of 4..258 bytes,
 * distances up to 32 KiB), then a single final block coded with dynamic Huffman codes built
 * from the page's own symbol counts, or with the fixed codes when those are shorter.  The
 * stream starts with the usual 0x78 0x01 header and ends with the Adler-32 of the page.
 * The output depends only on the input bytes (no state survives a call), so the same page
 * gives the same bytes on every thread, process, run and machine.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define PAGE_MAX 65536
#define HASH_BITS 12
#define MIN_MATCH 4
#define MAX_MATCH 258
#define MAX_DIST 32768
#define LITLEN_SYMS 286
#define DIST_SYMS 30
#define CLEN_SYMS 19
#define END_BLOCK 256
#define NO_DIST DIST_SYMS

typedef struct {
    uint16_t head[1u << HASH_BITS];      /* position of the last 4-byte prefix seen there */
    uint32_t syms[PAGE_MAX + 1];        /* see sym_entry() */
    uint32_t litlen_freq[LITLEN_SYMS];
    uint32_t dist_freq[DIST_SYMS + 1];    /* + NO_DIST, the literals' (never coded) */
    uint8_t litlen_len[LITLEN_SYMS + 2];  /* + the two symbols only the fixed code counts */
    uint8_t dist_len[DIST_SYMS + 1];      /* NO_DIST: length 0, code 0 */
    uint16_t litlen_code[LITLEN_SYMS + 2];
    uint16_t dist_code[DIST_SYMS + 1];
    uint8_t out[PAGE_MAX + PAGE_MAX / 8 + 64];  /* the stream (bound: compress_page) */
} Work;

/* Each thread's Work (~340 KiB), made on its first call and freed when the thread ends. */
static pthread_key_t work_key;

/* ---- symbol codes ---------------------------------------------------------------------- */

static inline int floor_log2(uint32_t v) { return 31 - __builtin_clz(v); }

/* Length 3..258 -> litlen symbol 257..285, with its extra bits. */
static inline void length_symbol(uint32_t len, int *sym, int *nextra, uint32_t *extra)
{
    uint32_t l = len - 3;
    if (len == 258) {
        *sym = 285; *nextra = 0; *extra = 0;
    } else if (l < 8) {
        *sym = 257 + (int)l; *nextra = 0; *extra = 0;
    } else {
        int b = floor_log2(l);
        *sym = 257 + 4 * (b - 1) + (int)((l >> (b - 2)) & 3);
        *nextra = b - 2;
        *extra = l & ((1u << (b - 2)) - 1);
    }
}

/* ---- LZ77 -------------------------------------------------------------------------------- */

static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static inline uint32_t match_length(const uint8_t *a, const uint8_t *b, uint32_t limit)
{
    uint32_t n = MIN_MATCH;
    while (n + 8 <= limit) {
        uint64_t x = load64(a + n) ^ load64(b + n);
        if (x)
            return n + (uint32_t)(__builtin_ctzll(x) >> 3);
        n += 8;
    }
    while (n < limit && a[n] == b[n])
        n++;
    return n;
}

static uint16_t LEN_SYM[256];  /* match length - 3 -> its litlen symbol, filled at import */
static uint8_t LEN_EXTRA[LITLEN_SYMS];  /* litlen symbol -> its extra bits (0: literals) */
static uint16_t LEN_BASE[LITLEN_SYMS];  /* litlen symbol -> its first length - 3 */
static const uint8_t DIST_EXTRA[DIST_SYMS + 1] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                                  7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 0};

static inline int dist_sym(uint32_t d)  /* distance - 1 -> its distance symbol */
{
    if (d < 4)
        return (int)d;
    int b = floor_log2(d);
    return 2 * b + (int)((d >> (b - 1)) & 1);
}

/* One parsed symbol in 32 bits, everything the writer needs without a branch: litlen
 * symbol (9 bits), its extra-bits value (5), distance symbol (5; NO_DIST for a literal),
 * its extra-bits value (13). */
static inline uint32_t sym_entry(uint32_t lsym, uint32_t lextra, uint32_t dsym, uint32_t dextra)
{
    return lsym | (lextra << 9) | (dsym << 14) | (dextra << 19);
}

static inline uint32_t hash4(uint32_t v) { return (v * 2654435761u) >> (32 - HASH_BITS); }

/* Parse the input into literals and matches, counting the symbols; returns how many.  A
 * table slot holds a position (0 when never set: position 0 is a candidate like any other,
 * as every candidate's bytes are compared before use). */
static size_t parse(Work *w, const uint8_t *in, uint32_t n)
{
    size_t count = 0;
    uint32_t i = 0;
    uint32_t *lf = w->litlen_freq, *df = w->dist_freq;
    memset(w->head, 0, sizeof w->head);
    memset(w->litlen_freq, 0, sizeof w->litlen_freq);
    memset(w->dist_freq, 0, sizeof w->dist_freq);
    while (i + MIN_MATCH <= n) {
        uint32_t v = load32(in + i);
        uint32_t h = hash4(v);
        uint32_t cand = w->head[h];
        w->head[h] = (uint16_t)i;
        if (cand < i && i - cand <= MAX_DIST && load32(in + cand) == v) {
            uint32_t limit = n - i < MAX_MATCH ? n - i : MAX_MATCH;
            uint32_t len = match_length(in + cand, in + i, limit);
            uint32_t d = i - cand - 1;
            uint32_t ls = LEN_SYM[len - 3];
            int ds = dist_sym(d);
            uint32_t dbase = ds < 4 ? (uint32_t)ds : ((2u | (ds & 1)) << DIST_EXTRA[ds]);
            w->syms[count++] = sym_entry(ls, len - 3 - LEN_BASE[ls], (uint32_t)ds, d - dbase);
            lf[ls]++;
            df[ds]++;
            i += len;
            if (i + MIN_MATCH <= n && len > 4)  /* remember where this match ended */
                w->head[hash4(load32(in + i - 1))] = (uint16_t)(i - 1);
        } else {
            w->syms[count++] = sym_entry(in[i], 0, NO_DIST, 0);
            lf[in[i]]++;
            i++;
        }
    }
    for (; i < n; i++) {
        w->syms[count++] = sym_entry(in[i], 0, NO_DIST, 0);
        lf[in[i]]++;
    }
    lf[END_BLOCK]++;
    return count;
}

/* ---- Huffman codes ------------------------------------------------------------------------ */

/* The used symbols of freq[0..n) ordered by (count, symbol) into leaf; returns how many.
 * A stable LSD radix sort on the count, 7 bits a pass (insertion sort for a few symbols). */
static int sort_leaves(const uint32_t *freq, int n, int *leaf)
{
    int nl = 0, tmp[LITLEN_SYMS];
    uint32_t top = 0;
    for (int s = 0; s < n; s++) {  /* (no branch: zero counts are common and unpredictable) */
        leaf[nl] = s;
        nl += freq[s] != 0;
        top |= freq[s];
    }
    if (nl <= 32) {
        for (int i = 1; i < nl; i++) {
            int s = leaf[i], j = i;
            while (j > 0 && freq[leaf[j - 1]] > freq[s]) { leaf[j] = leaf[j - 1]; j--; }
            leaf[j] = s;
        }
        return nl;
    }
    int *src = leaf, *dst = tmp;
    for (int shift = 0; shift < 32 && (top >> shift); shift += 7) {
        int start[129] = {0};
        for (int i = 0; i < nl; i++) start[((freq[src[i]] >> shift) & 0x7f) + 1]++;
        for (int d = 0; d < 128; d++) start[d + 1] += start[d];
        for (int i = 0; i < nl; i++) dst[start[(freq[src[i]] >> shift) & 0x7f]++] = src[i];
        int *t = src; src = dst; dst = t;
    }
    if (src != leaf) memcpy(leaf, src, (size_t)nl * sizeof *leaf);
    return nl;
}

/* Code lengths for freq[0..n) of at most maxbits bits.  Every code built here is complete:
 * a tree with fewer than two used symbols gets the missing ones with length 1 (symbols 0
 * and 1 first), as decoders are strict about incomplete codes.  When the optimal tree is
 * too deep, the counts are halved (keeping them non-zero) and the tree built again. */
static void build_lengths(const uint32_t *freq_in, int n, int maxbits, uint8_t *len)
{
    uint32_t freq[LITLEN_SYMS];
    int used = 0;
    for (int s = 0; s < n; s++) {
        freq[s] = freq_in[s];
        used += freq[s] != 0;
    }
    for (int s = 0; used < 2 && s < n; s++)
        if (!freq[s]) { freq[s] = 1; used++; }
    for (;;) {
        int leaf[LITLEN_SYMS];
        int nl = sort_leaves(freq, n, leaf);
        /* two-queue merge; nodes 0..nl-1 are leaves, nl.. internal */
        uint32_t weight[2 * LITLEN_SYMS];
        int parent[2 * LITLEN_SYMS];
        for (int k = 0; k < nl; k++) weight[k] = freq[leaf[k]];
        int next_leaf = 0, next_int = nl, nodes = nl;
        for (int m = 0; m < nl - 1; m++) {
            int pick[2];
            for (int t = 0; t < 2; t++) {
                if (next_leaf < nl && (next_int >= nodes || weight[next_leaf] <= weight[next_int]))
                    pick[t] = next_leaf++;
                else
                    pick[t] = next_int++;
            }
            weight[nodes] = weight[pick[0]] + weight[pick[1]];
            parent[pick[0]] = parent[pick[1]] = nodes;
            nodes++;
        }
        /* depths: the root is the last node; parents always come after their children */
        uint8_t depth[2 * LITLEN_SYMS];
        depth[nodes - 1] = 0;
        int deepest = 0;
        for (int k = nodes - 2; k >= 0; k--) {
            depth[k] = depth[parent[k]] + 1;
            if (k < nl && depth[k] > deepest) deepest = depth[k];
        }
        if (deepest <= maxbits) {
            memset(len, 0, (size_t)n);
            for (int k = 0; k < nl; k++) len[leaf[k]] = depth[k];
            return;
        }
        for (int s = 0; s < n; s++)
            if (freq[s]) freq[s] = (freq[s] + 1) >> 1;
    }
}

static uint8_t REV8[256];  /* bit-reversed bytes, filled at import */

/* Canonical codes (RFC 1951 3.2.2), bit-reversed for an LSB-first writer. */
static void build_codes(const uint8_t *len, int n, uint16_t *code)
{
    int bl_count[16] = {0};
    uint32_t next[16];
    for (int s = 0; s < n; s++) bl_count[len[s]]++;
    bl_count[0] = 0;
    uint32_t c = 0;
    for (int b = 1; b < 16; b++) { c = (c + (uint32_t)bl_count[b - 1]) << 1; next[b] = c; }
    for (int s = 0; s < n; s++) {
        int l = len[s];
        if (!l) { code[s] = 0; continue; }
        uint32_t v = next[l]++;
        uint32_t r = ((uint32_t)REV8[v & 0xff] << 8) | REV8[(v >> 8) & 0xff];
        code[s] = (uint16_t)(r >> (16 - l));
    }
}

/* ---- bit output ---------------------------------------------------------------------------- */

typedef struct { uint8_t *out; size_t pos; uint64_t buf; int bits; } Bits;

static inline void put(Bits *b, uint32_t v, int n)
{
    b->buf |= (uint64_t)v << b->bits;
    b->bits += n;
    if (b->bits >= 32) {
        uint32_t word = (uint32_t)b->buf;
        memcpy(b->out + b->pos, &word, 4);  /* little-endian hosts only (checked at import) */
        b->pos += 4; b->buf >>= 32; b->bits -= 32;
    }
}

static void flush(Bits *b)
{
    while (b->bits > 0) { b->out[b->pos++] = (uint8_t)b->buf; b->buf >>= 8; b->bits -= 8; }
    b->bits = 0;
}

/* ---- the block header of dynamic codes -------------------------------------------------- */

typedef struct {
    int hlit, hdist, hclen, nrle;
    uint8_t rle_sym[LITLEN_SYMS + DIST_SYMS];
    uint8_t rle_extra[LITLEN_SYMS + DIST_SYMS];
    uint8_t clen_len[CLEN_SYMS];
    uint16_t clen_code[CLEN_SYMS];
} Header;

static const uint8_t CLEN_ORDER[CLEN_SYMS] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2,
                                              14, 1, 15};
static const uint8_t CLEN_EXTRA[CLEN_SYMS] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7};

/* Run-length code the code lengths (symbols 16, 17, 18) and build their own code; returns
 * the header's size in bits. */
static uint64_t plan_header(const Work *w, Header *h)
{
    uint8_t all[LITLEN_SYMS + DIST_SYMS];
    uint32_t clen_freq[CLEN_SYMS] = {0};
    h->hlit = LITLEN_SYMS;
    while (h->hlit > 257 && !w->litlen_len[h->hlit - 1]) h->hlit--;
    h->hdist = DIST_SYMS;
    while (h->hdist > 1 && !w->dist_len[h->hdist - 1]) h->hdist--;
    memcpy(all, w->litlen_len, (size_t)h->hlit);
    memcpy(all + h->hlit, w->dist_len, (size_t)h->hdist);
    int total = h->hlit + h->hdist, k = 0;
    h->nrle = 0;
    while (k < total) {
        int v = all[k], run = 1;
        while (k + run < total && all[k + run] == v) run++;
        int left = run;
        if (v == 0) {
            while (left >= 3) {
                int r = left > 138 ? 138 : left;
                h->rle_sym[h->nrle] = r >= 11 ? 18 : 17;
                h->rle_extra[h->nrle++] = (uint8_t)(r >= 11 ? r - 11 : r - 3);
                left -= r;
            }
        } else {
            h->rle_sym[h->nrle] = (uint8_t)v; h->rle_extra[h->nrle++] = 0; left--;
            while (left >= 3) {
                int r = left > 6 ? 6 : left;
                h->rle_sym[h->nrle] = 16; h->rle_extra[h->nrle++] = (uint8_t)(r - 3);
                left -= r;
            }
        }
        while (left-- > 0) { h->rle_sym[h->nrle] = (uint8_t)v; h->rle_extra[h->nrle++] = 0; }
        k += run;
    }
    for (int i = 0; i < h->nrle; i++) clen_freq[h->rle_sym[i]]++;
    build_lengths(clen_freq, CLEN_SYMS, 7, h->clen_len);
    build_codes(h->clen_len, CLEN_SYMS, h->clen_code);
    h->hclen = CLEN_SYMS;
    while (h->hclen > 4 && !h->clen_len[CLEN_ORDER[h->hclen - 1]]) h->hclen--;
    uint64_t bits = 5 + 5 + 4 + 3 * (uint64_t)h->hclen;
    for (int i = 0; i < h->nrle; i++)
        bits += h->clen_len[h->rle_sym[i]] + CLEN_EXTRA[h->rle_sym[i]];
    return bits;
}

static void write_header(Bits *b, const Header *h)
{
    put(b, (uint32_t)(h->hlit - 257), 5);
    put(b, (uint32_t)(h->hdist - 1), 5);
    put(b, (uint32_t)(h->hclen - 4), 4);
    for (int i = 0; i < h->hclen; i++) put(b, h->clen_len[CLEN_ORDER[i]], 3);
    for (int i = 0; i < h->nrle; i++) {
        int s = h->rle_sym[i];
        put(b, h->clen_code[s], h->clen_len[s]);
        if (CLEN_EXTRA[s]) put(b, h->rle_extra[i], CLEN_EXTRA[s]);
    }
}

/* ---- the whole stream ----------------------------------------------------------------------- */

static void fixed_lengths(uint8_t *litlen, uint8_t *dist)
{
    for (int s = 0; s < LITLEN_SYMS + 2; s++)  /* 286 and 287 take part in the canonical order */
        litlen[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    for (int s = 0; s < DIST_SYMS; s++) dist[s] = 5;
    dist[NO_DIST] = 0;
}

/* Bits the symbols take with the current lengths (extra bits included). */
static uint64_t body_bits(const Work *w)
{
    uint64_t bits = 0;
    for (int s = 0; s < LITLEN_SYMS; s++)
        bits += (uint64_t)w->litlen_freq[s] * (w->litlen_len[s] + LEN_EXTRA[s]);
    for (int s = 0; s < DIST_SYMS; s++)
        bits += (uint64_t)w->dist_freq[s] * (w->dist_len[s] + DIST_EXTRA[s]);
    return bits;
}

static void write_body(Bits *b, const Work *w, size_t count)
{
    uint64_t buf = b->buf;
    int bits = b->bits;
    uint8_t *out = b->out + b->pos;
    const uint16_t *lc = w->litlen_code, *dc = w->dist_code;
    const uint8_t *ll = w->litlen_len, *dl = w->dist_len;
    memcpy(out, &buf, 8);  /* down to < 8 pending bits: a match adds up to 48 */
    out += bits >> 3;
    buf >>= bits & ~7;
    bits &= 7;
    for (size_t k = 0; k < count; k++) {
        uint32_t e = w->syms[k];
        uint32_t ls = e & 0x1ff, ds = (e >> 14) & 0x1f;
        buf |= (uint64_t)(lc[ls] | (((e >> 9) & 0x1f) << ll[ls])) << bits;
        bits += ll[ls] + LEN_EXTRA[ls];
        buf |= (uint64_t)(dc[ds] | ((e >> 19) << dl[ds])) << bits;
        bits += dl[ds] + DIST_EXTRA[ds];
        memcpy(out, &buf, 8);  /* little-endian hosts only (checked at import) */
        out += bits >> 3;
        buf >>= bits & ~7;
        bits &= 7;
    }
    buf |= (uint64_t)lc[END_BLOCK] << bits;
    bits += ll[END_BLOCK];
    memcpy(out, &buf, 8);
    out += bits >> 3;
    buf >>= bits & ~7;
    bits &= 7;
    b->buf = buf;
    b->bits = bits;
    b->pos = (size_t)(out - b->out);
}

#ifdef __SSE2__
#include <emmintrin.h>

/* Adler-32 of p[0..n).  16 bytes a step with SSE2 (part of every x86-64): the byte sums by
 * _mm_sad_epu8, the position-weighted sums (16 - i for byte i) by _mm_madd_epi16. */
static uint32_t adler32(const uint8_t *p, size_t n)
{
    uint64_t a = 1, b = 0;
    const __m128i zero = _mm_setzero_si128();
    const __m128i w_first = _mm_set_epi16(9, 10, 11, 12, 13, 14, 15, 16);
    const __m128i w_last = _mm_set_epi16(1, 2, 3, 4, 5, 6, 7, 8);
    while (n >= 16) {
        size_t blocks = n / 16 < 5552 / 16 ? n / 16 : 5552 / 16;
        __m128i sum = zero, prefix = zero, weighted = zero;
        for (size_t k = 0; k < blocks; k++, p += 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)p);
            prefix = _mm_add_epi64(prefix, sum);
            sum = _mm_add_epi64(sum, _mm_sad_epu8(x, zero));
            weighted = _mm_add_epi32(weighted, _mm_madd_epi16(_mm_unpacklo_epi8(x, zero), w_first));
            weighted = _mm_add_epi32(weighted, _mm_madd_epi16(_mm_unpackhi_epi8(x, zero), w_last));
        }
        uint64_t s[2], q[2];
        uint32_t w[4];
        _mm_storeu_si128((__m128i *)s, sum);
        _mm_storeu_si128((__m128i *)q, prefix);
        _mm_storeu_si128((__m128i *)w, weighted);
        b += 16 * blocks * a + 16 * (q[0] + q[1]) + w[0] + w[1] + w[2] + w[3];
        a += s[0] + s[1];
        a %= 65521; b %= 65521;
        n -= blocks * 16;
    }
    for (; n; n--) { a += *p++; b += a; }
    return (uint32_t)(((b % 65521) << 16) | (a % 65521));
}
#else
static uint32_t adler32(const uint8_t *p, size_t n)  /* elsewhere: a byte a step */
{
    uint32_t a = 1, b = 0;
    while (n) {
        size_t k = n < 5552 ? n : 5552;  /* 5552 bytes cannot overflow b (zlib's NMAX) */
        n -= k;
        while (k--) { a += *p++; b += a; }
        a %= 65521; b %= 65521;
    }
    return (b << 16) | a;
}
#endif

/* Compress in[0..n) into out; returns the stream's size.  out has room for n + n/8 + 64
 * bytes: the fixed codes bound the stream (<= 9 bits a literal, <= 8+5+5+13 bits a match of
 * >= 4 bytes; dynamic codes are used only when shorter), plus the zlib header, the block
 * header, the end of block, Adler-32 and slack for the writer's 8-byte stores. */
static size_t compress_page(Work *w, const uint8_t *in, uint32_t n, uint8_t *out)
{
    size_t count = parse(w, in, n);
    Header h;
    build_lengths(w->litlen_freq, LITLEN_SYMS, 15, w->litlen_len);
    w->litlen_len[LITLEN_SYMS] = w->litlen_len[LITLEN_SYMS + 1] = 0;
    build_lengths(w->dist_freq, DIST_SYMS, 15, w->dist_len);
    w->dist_len[NO_DIST] = 0;
    uint64_t dynamic = plan_header(w, &h) + body_bits(w);
    uint8_t dyn_litlen[LITLEN_SYMS + 2], dyn_dist[DIST_SYMS + 1];
    memcpy(dyn_litlen, w->litlen_len, sizeof dyn_litlen);
    memcpy(dyn_dist, w->dist_len, sizeof dyn_dist);
    fixed_lengths(w->litlen_len, w->dist_len);
    uint64_t fixed = body_bits(w);
    int use_fixed = fixed <= dynamic;
    if (!use_fixed) {
        memcpy(w->litlen_len, dyn_litlen, sizeof dyn_litlen);
        memcpy(w->dist_len, dyn_dist, sizeof dyn_dist);
    }
    build_codes(w->litlen_len, LITLEN_SYMS + 2, w->litlen_code);
    build_codes(w->dist_len, DIST_SYMS + 1, w->dist_code);
    Bits b = {out, 0, 0, 0};
    out[0] = 0x78; out[1] = 0x01;
    b.pos = 2;
    put(&b, 1, 1);                      /* BFINAL */
    put(&b, use_fixed ? 1 : 2, 2);      /* BTYPE: fixed or dynamic */
    if (!use_fixed) write_header(&b, &h);
    write_body(&b, w, count);
    flush(&b);
    uint32_t a = adler32(in, n);
    out[b.pos++] = (uint8_t)(a >> 24); out[b.pos++] = (uint8_t)(a >> 16);
    out[b.pos++] = (uint8_t)(a >> 8); out[b.pos++] = (uint8_t)a;
    return b.pos;
}

/* ---- Python ---------------------------------------------------------------------------------- */

static Work *get_work(void)
{
    Work *w = pthread_getspecific(work_key);
    if (!w) {
        w = malloc(sizeof(Work));
        if (w && pthread_setspecific(work_key, w) != 0) {
            free(w);
            w = NULL;
        }
    }
    return w;
}

static PyObject *py_compress(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > PAGE_MAX) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "pagezip compresses at most %d bytes, got %zd",
                     PAGE_MAX, view.len);
        return NULL;
    }
    Work *w = get_work();
    if (!w) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    size_t size;
    Py_BEGIN_ALLOW_THREADS
    size = compress_page(w, (const uint8_t *)view.buf, (uint32_t)view.len, w->out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)w->out, (Py_ssize_t)size);
}

/* build_lengths alone, for the tests: code lengths of at most maxbits for the counts. */
static PyObject *py_code_lengths(PyObject *self, PyObject *args)
{
    PyObject *seq;
    int maxbits;
    uint32_t freq[LITLEN_SYMS];
    uint8_t len[LITLEN_SYMS];
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi", &seq, &maxbits))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "counts must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 2 || n > LITLEN_SYMS || maxbits < 1 || maxbits > 15 || (1L << maxbits) < n) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "2..286 counts, and maxbits 1..15 with room for them");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == (unsigned long)-1 && PyErr_Occurred()) { Py_DECREF(fast); return NULL; }
        if (v > 0x7fffffffUL) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "a count is too large");
            return NULL;
        }
        freq[i] = (uint32_t)v;
    }
    Py_DECREF(fast);
    build_lengths(freq, (int)n, maxbits, len);
    return PyBytes_FromStringAndSize((const char *)len, n);
}

static PyMethodDef methods[] = {
    {"_code_lengths", py_code_lengths, METH_VARARGS,
     "_code_lengths(counts, maxbits) -> bytes: the Huffman code lengths the encoder builds\n"
     "(for the tests)."},
    {"compress", py_compress, METH_O,
     "compress(page) -> bytes: one zlib stream of the page (at most 64 KiB), the same bytes\n"
     "for the same page everywhere."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kdumptool._pagezip",
    "A zlib encoder for single dump pages (see kdumptool/_pagezip.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pagezip(void)
{
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "kdumptool._pagezip needs a little-endian host");
        return NULL;
    }
    if (pthread_key_create(&work_key, free) != 0) {
        PyErr_SetString(PyExc_ImportError, "kdumptool._pagezip: no thread-specific key");
        return NULL;
    }
    for (int l = 255; l >= 0; l--) {  /* from the top: a symbol's base is its lowest length */
        int sym, ne;
        uint32_t ex;
        length_symbol((uint32_t)l + 3, &sym, &ne, &ex);
        LEN_SYM[l] = (uint16_t)sym;
        LEN_EXTRA[sym] = (uint8_t)ne;
        LEN_BASE[sym] = (uint16_t)l;
    }
    for (int v = 0; v < 256; v++) {
        int r = 0;
        for (int b = 0; b < 8; b++) r |= ((v >> b) & 1) << (7 - b);
        REV8[v] = (uint8_t)r;
    }
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "PAGE_MAX", PAGE_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
