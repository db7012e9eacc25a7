
/*
 * verify-export (docs/compliance.md "Verifying an export"): checks an
 * export zip offline, with nothing but the auditor's verifier key:
 *
 *   1. manifest.sig is a signed note by the key, "<origin>/export" and
 *      the SHA-256 of manifest.txt;
 *   2. every file the manifest lists is in the zip with its size and
 *      SHA-256, the count matches, and nothing else is in the zip;
 *   3. per journal, chain/<w>.checkpoint is a checkpoint signed by the
 *      key for "<origin>/<w>" whose size is the last leaf's seq and
 *      whose root is that leaf (chain/<w>.leaves: the entry hashes);
 *   4. every line of records.jsonl: SHA-256(0x00 || record || prev_hash)
 *      is its entry_hash and the leaf at its seq, its prev_hash is the
 *      leaf before (zeros for seq 1), and the record carries that seq.
 *
 * Input limits: manifest and signature sizes, a line of records.jsonl
 * (CAUD_XV_LINE), leaves files that must be whole hashes; libzip
 * checks each entry's CRC and size as it is read.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <openssl/evp.h>
#include <zip.h>

#include "caud_comply.h"


#define CAUD_XV_MANIFEST  (64 * 1024 * 1024)
#define CAUD_XV_LINE      (4 * 1024 * 1024)
#define CAUD_XV_LEAVES    ((uint64_t) 4 * 1024 * 1024 * 1024)
#define CAUD_XV_SHOWN     1000


typedef struct {
    uint32_t   writer;
    uint64_t   lo;
    uint64_t   hi;
    uint8_t   *leaves;
    int        ok;
} caud_xvj_t;


typedef struct {
    zip_t             *za;
    FILE              *out;
    caud_verifier_t   *v;
    caud_hasher_t     *h;
    char               origin[CAUD_ORIGIN_MAX];
    char               node[128];
    uint64_t           records;
    caud_xvj_t        *js;
    size_t             nj;
    uint64_t           findings;
    char              *err;
    size_t             errlen;
} caud_xv_t;


static void
caud_xvfind(caud_xv_t *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
caud_xvfind(caud_xv_t *v, const char *fmt, ...)
{
    va_list  ap;

    if (v->findings++ >= CAUD_XV_SHOWN) {
        return;
    }

    va_start(ap, fmt);
    vfprintf(v->out, fmt, ap);
    va_end(ap);
    fputc('\n', v->out);
}


/* a whole entry (at most max bytes) into a NUL-terminated buffer */
static char *
caud_xvread(caud_xv_t *v, const char *name, uint64_t max, uint64_t *len)
{
    char         *buf;
    zip_file_t   *zf;
    zip_stat_t    st;
    zip_int64_t   n;

    if (zip_stat(v->za, name, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        caud_xvfind(v, "%s: deleted (not in the zip)", name);
        return NULL;
    }

    if (st.size > max) {
        caud_xvfind(v, "%s: refused (%" PRIu64 " bytes, the limit is %"
                    PRIu64 ")", name, (uint64_t) st.size, max);
        return NULL;
    }

    buf = malloc(st.size + 1);
    zf = buf ? zip_fopen(v->za, name, 0) : NULL;
    n = zf ? zip_fread(zf, buf, st.size) : -1;

    if (zf == NULL || n < 0 || (zip_uint64_t) n != st.size) {
        caud_xvfind(v, "%s: changed (%s)", name,
                    zf ? zip_file_strerror(zf) : "cannot read");
        if (zf) {
            zip_fclose(zf);
        }
        free(buf);
        return NULL;
    }

    zip_fclose(zf);
    buf[st.size] = '\0';
    *len = st.size;

    return buf;
}


static int
caud_xvhash(caud_xv_t *v, const char *name, char hex[65], uint64_t *size)
{
    int            rc;
    char           buf[65536];
    uint8_t        md[32];
    size_t         i;
    zip_file_t    *zf;
    zip_int64_t    n;
    EVP_MD_CTX    *ctx;
    unsigned int   mdlen;

    zf = zip_fopen(v->za, name, 0);
    if (zf == NULL) {
        return 0;
    }

    ctx = EVP_MD_CTX_new();
    rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    *size = 0;

    while (rc && (n = zip_fread(zf, buf, sizeof(buf))) > 0) {
        *size += n;
        rc = EVP_DigestUpdate(ctx, buf, n) == 1;
    }

    /* a CRC or size mismatch surfaces as a read error */
    if (rc && (n < 0 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)) {
        rc = -1;
    }

    EVP_MD_CTX_free(ctx);
    zip_fclose(zf);

    for (i = 0; rc == 1 && i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }

    return rc;
}


static void
caud_xvsha(const char *p, size_t n, char hex[65])
{
    uint8_t       md[32];
    unsigned int  mdlen;
    size_t        i;

    EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
    for (i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
}


/* 1: the manifest is signed by the key and names this origin */
static int
caud_xvsig(caud_xv_t *v, const char *man, uint64_t mlen)
{
    int        ok;
    char      *sig, hex[65], want[CAUD_ORIGIN_MAX + 100], e[256];
    size_t     tlen;
    uint64_t   slen;

    sig = caud_xvread(v, "manifest.sig", CAUD_NOTE_MAX, &slen);
    if (sig == NULL) {
        return 0;
    }

    caud_xvsha(man, mlen, hex);
    snprintf(want, sizeof(want), "%s/export\n%s\n", v->origin, hex);
    ok = 0;

    if (caud_note_verify(v->v, sig, slen, &tlen, e, sizeof(e)) != 0) {
        caud_xvfind(v, "manifest.sig: bad signature (%s)", e);

    } else if (tlen != strlen(want) || memcmp(sig, want, tlen) != 0) {
        caud_xvfind(v, "manifest.txt: changed (its SHA-256 or origin is "
                    "not the signed one)");

    } else {
        ok = 1;
    }

    free(sig);

    return ok;
}


static int
caud_xvjournal_line(caud_xv_t *v, const char *s)
{
    caud_xvj_t  *j, *js;

    js = realloc(v->js, (v->nj + 1) * sizeof(caud_xvj_t));
    if (js == NULL) {
        return -1;
    }

    v->js = js;
    j = &v->js[v->nj];
    memset(j, 0, sizeof(caud_xvj_t));

    if (sscanf(s, "%" SCNu32 " %" SCNu64 " %" SCNu64, &j->writer, &j->lo,
               &j->hi) != 3 || j->lo == 0 || j->hi < j->lo)
    {
        caud_xvfind(v, "manifest.txt: malformed Journal line");
        return 0;
    }

    v->nj++;

    return 0;
}


/* the files: listed, present, same size and hash; nothing unlisted */
static void
caud_xvfiles(caud_xv_t *v, char *man)
{
    char         *line, *save, hex[65], name[4200];
    uint64_t      size, count, listed;
    zip_int64_t   i, n;
    const char   *zn;
    GHashTable   *seen;

    seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    count = UINT64_MAX;
    listed = 0;

    for (line = strtok_r(man, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
    {
        if (strncmp(line, "Origin: ", 8) == 0 && !v->origin[0]) {
            snprintf(v->origin, sizeof(v->origin), "%s", line + 8);
        } else if (strncmp(line, "Node: ", 6) == 0) {
            snprintf(v->node, sizeof(v->node), "%s", line + 6);
        } else if (strncmp(line, "Records: ", 9) == 0) {
            v->records = strtoull(line + 9, NULL, 10);
        } else if (strncmp(line, "Count: ", 7) == 0) {
            count = strtoull(line + 7, NULL, 10);
        } else if (strncmp(line, "Journal: ", 9) == 0) {
            caud_xvjournal_line(v, line + 9);

        } else if (strncmp(line, "File: ", 6) == 0) {
            char  want[65];
            int   off;

            listed++;
            if (sscanf(line + 6, "%64s %" SCNu64 " %n", want, &size, &off)
                != 2)
            {
                caud_xvfind(v, "manifest.txt: malformed File line");
                continue;
            }

            snprintf(name, sizeof(name), "%s", line + 6 + off);
            g_hash_table_add(seen, g_strdup(name));
            want[64] = '\0';

            uint64_t  got;
            int       rc = caud_xvhash(v, name, hex, &got);

            if (rc == 0) {
                caud_xvfind(v, "%s: deleted (listed in the manifest, not "
                            "in the zip)", name);
            } else if (rc < 0) {
                caud_xvfind(v, "%s: changed (unreadable: CRC or size "
                            "mismatch)", name);
            } else if (got != size || strcmp(hex, want) != 0) {
                caud_xvfind(v, "%s: changed (SHA-256 %s, the manifest says "
                            "%s)", name, hex, want);
            }
        }
    }

    if (count != listed) {
        caud_xvfind(v, "manifest.txt: changed (Count %" PRIu64 ", %" PRIu64
                    " files listed)", count, listed);
    }

    n = zip_get_num_entries(v->za, 0);
    for (i = 0; i < n; i++) {
        zn = zip_get_name(v->za, i, 0);
        if (zn && strcmp(zn, "manifest.txt") != 0
            && strcmp(zn, "manifest.sig") != 0
            && !g_hash_table_contains(seen, zn))
        {
            caud_xvfind(v, "%s: inserted (not in the manifest)", zn);
        }
    }

    g_hash_table_destroy(seen);
}


/* leaves and the checkpoint that must end them */
static void
caud_xvchain(caud_xv_t *v, caud_xvj_t *j)
{
    char                name[64], cpname[64], origin[CAUD_ORIGIN_MAX + 16];
    char               *note, e[256];
    uint64_t            len, nlen;
    caud_checkpoint_t   cp;

    snprintf(name, sizeof(name), "chain/%" PRIu32 ".leaves", j->writer);
    snprintf(cpname, sizeof(cpname), "chain/%" PRIu32 ".checkpoint",
             j->writer);

    j->leaves = (uint8_t *) caud_xvread(v, name, CAUD_XV_LEAVES, &len);
    if (j->leaves == NULL) {
        return;
    }

    if (len != (j->hi - j->lo + 1) * CAUD_HASH_LEN) {
        caud_xvfind(v, "%s: changed (%" PRIu64 " bytes for seqs %" PRIu64
                    "..%" PRIu64 ")", name, len, j->lo, j->hi);
        return;
    }

    note = caud_xvread(v, cpname, CAUD_NOTE_MAX, &nlen);
    if (note == NULL) {
        return;
    }

    snprintf(origin, sizeof(origin), "%s/%" PRIu32, v->origin, j->writer);

    if (caud_checkpoint_verify(v->v, note, nlen, origin, &cp, e, sizeof(e))
        != 0)
    {
        caud_xvfind(v, "%s: bad signature (%s)", cpname, e);

    } else if (cp.size != j->hi
               || memcmp(cp.root, j->leaves + (j->hi - j->lo)
                         * CAUD_HASH_LEN, CAUD_HASH_LEN) != 0)
    {
        caud_xvfind(v, "%s: changed (checkpoint %" PRIu64 " does not end "
                    "the leaves at seq %" PRIu64 ")", name, cp.size, j->hi);

    } else {
        j->ok = 1;
    }

    free(note);
}


static caud_xvj_t *
caud_xvj(caud_xv_t *v, uint32_t writer)
{
    size_t  i;

    for (i = 0; i < v->nj; i++) {
        if (v->js[i].writer == writer) {
            return &v->js[i];
        }
    }

    return NULL;
}


static int
caud_xvhex(const char *s, uint8_t *out)
{
    size_t  i;
    int     hi, lo;

    if (s == NULL || strlen(s) != 2 * CAUD_HASH_LEN) {
        return -1;
    }

    for (i = 0; i < CAUD_HASH_LEN; i++) {
        hi = g_ascii_xdigit_value(s[2 * i]);
        lo = g_ascii_xdigit_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[i] = (uint8_t) (hi << 4 | lo);
    }

    return 0;
}


/* one line of records.jsonl */
static void
caud_xvline(caud_xv_t *v, const char *p, size_t n, uint64_t lineno)
{
    char            *key;
    json_t          *o, *rec;
    size_t           plen;
    uint8_t          prev[CAUD_HASH_LEN], entry[CAUD_HASH_LEN];
    uint8_t          h[CAUD_HASH_LEN], *dec;
    uint64_t         seq;
    uint32_t         w;
    gsize            dlen;
    caud_xvj_t      *j;
    const uint8_t   *leaf, *want_prev;
    const char      *payload;
    static const uint8_t  zero[CAUD_HASH_LEN];

    o = json_loadb(p, n, 0, NULL);
    dec = NULL;

    if (o == NULL
        || caud_xvhex(json_string_value(json_object_get(o, "prev_hash")),
                      prev) != 0
        || caud_xvhex(json_string_value(json_object_get(o, "entry_hash")),
                      entry) != 0
        || !json_is_integer(json_object_get(o, "seq"))
        || !json_is_integer(json_object_get(o, "writer_id")))
    {
        caud_xvfind(v, "records.jsonl line %" PRIu64 ": changed (not a "
                    "record line)", lineno);
        json_decref(o);
        return;
    }

    seq = json_integer_value(json_object_get(o, "seq"));
    w = json_integer_value(json_object_get(o, "writer_id"));

    /* the record's bytes as hashed: after the first ,"record": (keys
     * and strings before it escape every quote) up to the final } */
    key = memmem(p, n, ",\"record\":", 10);
    if (key) {
        payload = key + 10;
        plen = p + n - 1 - payload;
    } else {
        dec = g_base64_decode(json_string_value(json_object_get(o,
                              "record_b64")) ?: "", &dlen);
        payload = (const char *) dec;
        plen = dlen;
    }

    rec = json_loadb(payload, plen, 0, NULL);
    j = caud_xvj(v, w);

    if (caud_hasher_entry(v->h, payload, plen, prev, h) != 0
        || memcmp(h, entry, CAUD_HASH_LEN) != 0)
    {
        caud_xvfind(v, "record %s/%" PRIu32 "/%" PRIu64 ": changed (its "
                    "entry_hash does not match its bytes)", v->node, w, seq);

    } else if (dec == NULL && (rec == NULL
               || (uint64_t) json_integer_value(json_object_get(rec, "seq"))
                  != seq))
    {
        caud_xvfind(v, "record %s/%" PRIu32 "/%" PRIu64 ": changed (the "
                    "record carries another seq)", v->node, w, seq);

    } else if (j == NULL || seq < j->lo || seq > j->hi
               || (seq == j->lo && seq != 1))
    {
        caud_xvfind(v, "record %s/%" PRIu32 "/%" PRIu64 ": inserted (not "
                    "in the exported chain)", v->node, w, seq);

    } else if (j->leaves && j->ok) {
        leaf = j->leaves + (seq - j->lo) * CAUD_HASH_LEN;
        want_prev = seq == 1 ? zero : leaf - CAUD_HASH_LEN;

        if (memcmp(leaf, entry, CAUD_HASH_LEN) != 0
            || memcmp(want_prev, prev, CAUD_HASH_LEN) != 0)
        {
            caud_xvfind(v, "record %s/%" PRIu32 "/%" PRIu64 ": changed "
                        "(not the chain's record at that seq)", v->node, w,
                        seq);
        }
    }

    json_decref(rec);
    json_decref(o);
    g_free(dec);
}


static void
caud_xvrecords(caud_xv_t *v)
{
    char         *buf, *nl, *p;
    size_t        have;
    uint64_t      lineno, n;
    zip_file_t   *zf;
    zip_int64_t   got;

    zf = zip_fopen(v->za, "records.jsonl", 0);
    if (zf == NULL) {
        caud_xvfind(v, "records.jsonl: deleted (not in the zip)");
        return;
    }

    buf = malloc(CAUD_XV_LINE + 1);
    if (buf == NULL) {
        zip_fclose(zf);
        return;
    }

    have = 0;
    lineno = 0;
    n = 0;

    for ( ;; ) {
        got = zip_fread(zf, buf + have, CAUD_XV_LINE - have);
        if (got < 0) {
            caud_xvfind(v, "records.jsonl: changed (%s)",
                        zip_file_strerror(zf));
            break;
        }

        have += got;
        p = buf;

        while ((nl = memchr(p, '\n', buf + have - p)) != NULL) {
            lineno++;
            caud_xvline(v, p, nl - p, lineno);
            n++;
            p = nl + 1;
        }

        /* the incomplete line to the front, once per read */
        have -= p - buf;
        memmove(buf, p, have);

        if (got == 0) {
            if (have) {
                caud_xvfind(v, "records.jsonl: changed (a last line "
                            "without a newline)");
            }
            break;
        }

        if (have == CAUD_XV_LINE) {
            caud_xvfind(v, "records.jsonl line %" PRIu64 ": refused (longer"
                        " than %d bytes)", lineno + 1, CAUD_XV_LINE);
            break;
        }
    }

    if (n != v->records) {
        caud_xvfind(v, "records.jsonl: changed (%" PRIu64 " records, the "
                    "manifest says %" PRIu64 ")", n, v->records);
    }

    v->records = n;
    free(buf);
    zip_fclose(zf);
}


int
caud_export_verify(const char *zpath, const char *vkey, FILE *out,
    char *err, size_t errlen)
{
    int          zerr;
    char        *man;
    size_t       i;
    uint64_t     mlen;
    caud_xv_t    v;
    zip_error_t  ze;

    memset(&v, 0, sizeof(v));
    v.out = out;
    v.err = err;
    v.errlen = errlen;

    v.v = caud_verifier_new(vkey, err, errlen);
    if (v.v == NULL) {
        return -1;
    }

    v.za = zip_open(zpath, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (v.za == NULL) {
        zip_error_init_with_code(&ze, zerr);
        snprintf(err, errlen, "%s: %s", zpath, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        caud_verifier_free(v.v);
        return -1;
    }

    v.h = caud_hasher_new();
    man = caud_xvread(&v, "manifest.txt", CAUD_XV_MANIFEST, &mlen);

    if (man && v.h) {
        /* the origin first: the signature check needs it */
        char  *o = strstr(man, "\nOrigin: ");
        if (o) {
            size_t  k = strcspn(o + 9, "\n");
            snprintf(v.origin, sizeof(v.origin), "%.*s", (int) k, o + 9);
        }

        caud_xvsig(&v, man, mlen);
        caud_xvfiles(&v, man);

        for (i = 0; i < v.nj; i++) {
            caud_xvchain(&v, &v.js[i]);
        }

        caud_xvrecords(&v);
    }

    if (v.findings > CAUD_XV_SHOWN) {
        fprintf(out, "%" PRIu64 " more findings not shown\n",
                v.findings - CAUD_XV_SHOWN);
    }

    fprintf(out, "verify-export %s: %" PRIu64 " records, %zu journals: ",
            zpath, v.records, v.nj);
    if (v.findings) {
        fprintf(out, "%" PRIu64 " finding%s\n", v.findings,
                v.findings == 1 ? "" : "s");
    } else {
        fprintf(out, "OK\n");
    }

    for (i = 0; i < v.nj; i++) {
        free(v.js[i].leaves);
    }

    free(v.js);
    free(man);
    caud_hasher_free(v.h);
    zip_discard(v.za);
    caud_verifier_free(v.v);

    return v.findings ? 1 : 0;
}
