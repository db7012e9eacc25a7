
/*
 * Signed checkpoints (COMPLIANCE.md 3 and 7.2): Ed25519 keys, C2SP
 * tlog-checkpoint bodies in C2SP signed notes, the check of a journal
 * against a checkpoint, and the RFC 6962 tree head.
 *
 * A checkpoint signed every N records or T seconds, and kept away from
 * the journal and the database, is what makes a rewritten history or a
 * cut tail detectable: the chain alone can be recomputed by whoever
 * rewrites it.
 */


#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "caud.h"


#define CAUD_ED25519_LEN    32
#define CAUD_SIG_LEN        64
#define CAUD_KEYID_LEN      4
#define CAUD_ALG_ED25519    0x01      /* signed-note algorithm byte */
#define CAUD_NAME_MAX       128
#define CAUD_EM_DASH        "\xe2\x80\x94 "


struct caud_signer_s {
    EVP_PKEY  *pkey;
    char       name[CAUD_NAME_MAX];
    uint8_t    pub[CAUD_ED25519_LEN];
    uint8_t    keyid[CAUD_KEYID_LEN];
};


struct caud_verifier_s {
    EVP_PKEY  *pkey;
    char       name[CAUD_NAME_MAX];
    uint8_t    keyid[CAUD_KEYID_LEN];
};


static const uint8_t  caud_empty_root[CAUD_HASH_LEN] = {
    /* SHA-256 of nothing: RFC 6962 2.1, MTH({}) */
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
    0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
    0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55
};


static void caud_errf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


/* the message, plus OpenSSL's reason when it has one */
static void
caud_errf(char *buf, size_t size, const char *fmt, ...)
{
    char           ossl[160];
    size_t         n;
    va_list        ap;
    unsigned long  e;

    if (buf == NULL || size == 0) {
        ERR_clear_error();
        return;
    }

    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);

    e = ERR_peek_last_error();
    if (e != 0) {
        ERR_error_string_n(e, ossl, sizeof(ossl));
        n = strlen(buf);
        snprintf(buf + n, size - n, " (%s)", ossl);
    }

    ERR_clear_error();
}


/* ------------------------------------------------------------------ */
/* base64, RFC 4648 4, with padding, as signed notes use it */

static const char  caud_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


static void
caud_b64_encode(char *dst, const uint8_t *src, size_t n)
{
    EVP_EncodeBlock((unsigned char *) dst, src, (int) n);
}


/*
 * Strict: the canonical form only (no whitespace, padding required, zero
 * trailing bits), so one checkpoint has exactly one text and a changed
 * byte in a signature line cannot decode to the same value.
 */
static int
caud_b64_decode(uint8_t *dst, size_t size, const char *src, size_t n,
    size_t *out)
{
    int          pad, q;
    size_t       i, k, len;
    uint32_t     acc;
    const char  *c;

    if (n == 0 || n % 4 != 0) {
        return -1;
    }

    pad = (src[n - 1] == '=') + (src[n - 2] == '=');
    len = n / 4 * 3 - pad;

    if (len > size) {
        return -1;
    }

    k = 0;

    for (i = 0; i < n; i += 4) {
        acc = 0;

        for (q = 0; q < 4; q++) {
            if (i + q >= n - pad) {
                acc <<= 6;
                continue;
            }

            c = src[i + q] ? strchr(caud_b64, src[i + q]) : NULL;
            if (c == NULL) {
                return -1;
            }

            acc = acc << 6 | (uint32_t) (c - caud_b64);
        }

        if (k < len) {
            dst[k++] = (uint8_t) (acc >> 16);
        }
        if (k < len) {
            dst[k++] = (uint8_t) (acc >> 8);
        }
        if (k < len) {
            dst[k++] = (uint8_t) acc;
        }

        if (i + 4 == n && pad && (acc & ((1u << (8 * pad)) - 1)) != 0) {
            return -1;
        }
    }

    *out = len;

    return 0;
}


/* ------------------------------------------------------------------ */
/* keys */

/* signed-note key names: no spaces, no '+', which the vkey form uses */
static int
caud_name_ok(const char *name)
{
    size_t  n;

    n = strlen(name);
    if (n == 0 || n >= CAUD_NAME_MAX) {
        return 0;
    }

    for ( ; *name; name++) {
        if ((unsigned char) *name <= 0x20 || *name == '+' || *name == 0x7f)
        {
            return 0;
        }
    }

    return 1;
}


/* key ID = SHA-256(name || "\n" || 0x01 || public key)[:4] */
static int
caud_keyid(const char *name, const uint8_t *pub, uint8_t *id)
{
    int            rc;
    uint8_t        h[CAUD_HASH_LEN];
    unsigned int   n;
    EVP_MD_CTX    *ctx;
    const uint8_t  sep[2] = { '\n', CAUD_ALG_ED25519 };

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        return -1;
    }

    rc = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1
         && EVP_DigestUpdate(ctx, name, strlen(name)) == 1
         && EVP_DigestUpdate(ctx, sep, sizeof(sep)) == 1
         && EVP_DigestUpdate(ctx, pub, CAUD_ED25519_LEN) == 1
         && EVP_DigestFinal_ex(ctx, h, &n) == 1;

    EVP_MD_CTX_free(ctx);

    if (!rc) {
        return -1;
    }

    memcpy(id, h, CAUD_KEYID_LEN);

    return 0;
}


int
caud_key_generate(const char *path, char *err, size_t errlen)
{
    int        fd;
    FILE      *fp;
    EVP_PKEY  *pkey;

    fp = NULL;

    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (pkey == NULL) {
        caud_errf(err, errlen, "Ed25519 key generation failed");
        return -1;
    }

    /* O_EXCL: a signing key is never silently replaced, that would
     * orphan every checkpoint signed so far */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        caud_errf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }

    /* the umask cannot widen 0600, but a default ACL could */
    if (fchmod(fd, 0600) != 0) {
        caud_errf(err, errlen, "chmod %s: %s", path, strerror(errno));
        close(fd);
        goto fail_unlink;
    }

    fp = fdopen(fd, "w");
    if (fp == NULL) {
        caud_errf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        goto fail_unlink;
    }

    if (PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL) != 1
        || fflush(fp) != 0 || fsync(fileno(fp)) != 0)
    {
        caud_errf(err, errlen, "write %s", path);
        goto fail_unlink;
    }

    if (fclose(fp) != 0) {
        fp = NULL;
        caud_errf(err, errlen, "close %s: %s", path, strerror(errno));
        goto fail_unlink;
    }

    EVP_PKEY_free(pkey);

    return 0;

fail_unlink:

    if (fp) {
        fclose(fp);
    }

    unlink(path);

fail:

    EVP_PKEY_free(pkey);
    return -1;
}


caud_signer_t *
caud_signer_load(const char *path, const char *name, char *err,
    size_t errlen)
{
    FILE           *fp;
    size_t          n;
    caud_signer_t  *s;

    if (!caud_name_ok(name)) {
        caud_errf(err, errlen, "bad key name \"%s\"", name);
        return NULL;
    }

    s = calloc(1, sizeof(caud_signer_t));
    if (s == NULL) {
        caud_errf(err, errlen, "out of memory");
        return NULL;
    }

    fp = fopen(path, "re");
    if (fp == NULL) {
        caud_errf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }

    s->pkey = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    fclose(fp);

    if (s->pkey == NULL) {
        caud_errf(err, errlen, "%s: not a PEM private key", path);
        goto fail;
    }

    if (EVP_PKEY_get_id(s->pkey) != EVP_PKEY_ED25519) {
        caud_errf(err, errlen, "%s: not an Ed25519 key", path);
        goto fail;
    }

    n = sizeof(s->pub);
    if (EVP_PKEY_get_raw_public_key(s->pkey, s->pub, &n) != 1
        || n != CAUD_ED25519_LEN
        || caud_keyid(name, s->pub, s->keyid) != 0)
    {
        caud_errf(err, errlen, "%s: cannot derive the public key", path);
        goto fail;
    }

    strcpy(s->name, name);

    return s;

fail:

    caud_signer_free(s);
    return NULL;
}


int
caud_signer_vkey(const caud_signer_t *s, char *buf, size_t size)
{
    int      n;
    char     b64[64];
    uint8_t  key[1 + CAUD_ED25519_LEN];

    key[0] = CAUD_ALG_ED25519;
    memcpy(key + 1, s->pub, CAUD_ED25519_LEN);
    caud_b64_encode(b64, key, sizeof(key));

    n = snprintf(buf, size, "%s+%02x%02x%02x%02x+%s", s->name, s->keyid[0],
                 s->keyid[1], s->keyid[2], s->keyid[3], b64);

    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}


void
caud_signer_free(caud_signer_t *s)
{
    if (s == NULL) {
        return;
    }

    EVP_PKEY_free(s->pkey);
    free(s);
}


/* "<name>+<8 hex key ID>+<base64(0x01 || key)>" */
caud_verifier_t *
caud_verifier_new(const char *vkey, char *err, size_t errlen)
{
    char              hex[9], *end;
    size_t            n;
    uint8_t           key[1 + CAUD_ED25519_LEN + 1], id[CAUD_KEYID_LEN];
    uint32_t          want;
    const char       *p1, *p2;
    caud_verifier_t  *v;

    p1 = strchr(vkey, '+');
    p2 = p1 ? strchr(p1 + 1, '+') : NULL;

    if (p1 == NULL || p2 == NULL || p2 - p1 != 9
        || (size_t) (p1 - vkey) >= CAUD_NAME_MAX)
    {
        caud_errf(err, errlen, "verifier key: not name+hash+key");
        return NULL;
    }

    v = calloc(1, sizeof(caud_verifier_t));
    if (v == NULL) {
        caud_errf(err, errlen, "out of memory");
        return NULL;
    }

    memcpy(v->name, vkey, p1 - vkey);

    memcpy(hex, p1 + 1, 8);
    hex[8] = '\0';
    errno = 0;
    want = (uint32_t) strtoul(hex, &end, 16);

    if (!caud_name_ok(v->name) || errno != 0 || *end != '\0'
        || strspn(hex, "0123456789abcdef") != 8)
    {
        caud_errf(err, errlen, "verifier key: bad name or key hash");
        goto fail;
    }

    if (caud_b64_decode(key, sizeof(key), p2 + 1, strlen(p2 + 1), &n) != 0
        || n != 1 + CAUD_ED25519_LEN || key[0] != CAUD_ALG_ED25519)
    {
        caud_errf(err, errlen, "verifier key: not an Ed25519 key");
        goto fail;
    }

    /* the hash must match, or a key could be passed off under
     * another key's name */
    if (caud_keyid(v->name, key + 1, id) != 0
        || ((uint32_t) id[0] << 24 | (uint32_t) id[1] << 16
            | (uint32_t) id[2] << 8 | id[3]) != want)
    {
        caud_errf(err, errlen, "verifier key: key hash does not match");
        goto fail;
    }

    memcpy(v->keyid, id, CAUD_KEYID_LEN);

    v->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key + 1,
                                          CAUD_ED25519_LEN);
    if (v->pkey == NULL) {
        caud_errf(err, errlen, "verifier key: rejected by OpenSSL");
        goto fail;
    }

    return v;

fail:

    caud_verifier_free(v);
    return NULL;
}


void
caud_verifier_free(caud_verifier_t *v)
{
    if (v == NULL) {
        return;
    }

    EVP_PKEY_free(v->pkey);
    free(v);
}


/* ------------------------------------------------------------------ */
/* checkpoints */

static int
caud_origin_ok(const char *origin)
{
    size_t  n;

    n = strlen(origin);
    if (n == 0 || n >= CAUD_ORIGIN_MAX) {
        return 0;
    }

    for ( ; *origin; origin++) {
        if ((unsigned char) *origin < 0x20 || *origin == 0x7f) {
            return 0;
        }
    }

    return 1;
}


/*
 * The signed note "<text>\n— <name> base64(key ID || Ed25519(text))\n";
 * text must end with a newline and hold no blank line.
 */
int
caud_note_sign(caud_signer_t *s, const char *text, size_t tlen, char *buf,
    size_t size, size_t *len)
{
    int          m, rc;
    char         sig64[128];
    size_t       siglen;
    uint8_t      sig[CAUD_KEYID_LEN + CAUD_SIG_LEN];
    EVP_MD_CTX  *ctx;

    if (tlen == 0 || text[tlen - 1] != '\n' || tlen >= size) {
        errno = EINVAL;
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        errno = ENOMEM;
        return -1;
    }

    /* Ed25519 signs the text itself, no prehash (RFC 8032 5.1) */
    siglen = CAUD_SIG_LEN;
    rc = EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->pkey) == 1
         && EVP_DigestSign(ctx, sig + CAUD_KEYID_LEN, &siglen,
                           (const unsigned char *) text, tlen) == 1
         && siglen == CAUD_SIG_LEN;

    EVP_MD_CTX_free(ctx);
    ERR_clear_error();

    if (!rc) {
        errno = EIO;
        return -1;
    }

    memcpy(sig, s->keyid, CAUD_KEYID_LEN);
    caud_b64_encode(sig64, sig, sizeof(sig));

    memmove(buf, text, tlen);

    m = snprintf(buf + tlen, size - tlen, "\n" CAUD_EM_DASH "%s %s\n",
                 s->name, sig64);
    if (m < 0 || (size_t) m >= size - tlen) {
        errno = ENOSPC;
        return -1;
    }

    if (len) {
        *len = tlen + m;
    }

    return 0;
}


int
caud_checkpoint_sign(caud_signer_t *s, const caud_checkpoint_t *cp,
    char *buf, size_t size, size_t *len)
{
    int   n;
    char  root[64];

    if (!caud_origin_ok(cp->origin)) {
        errno = EINVAL;
        return -1;
    }

    caud_b64_encode(root, cp->root, CAUD_HASH_LEN);

    /* C2SP tlog-checkpoint: origin, decimal size, base64 root */
    n = snprintf(buf, size, "%s\n%" PRIu64 "\n%s\n", cp->origin, cp->size,
                 root);
    if (n < 0 || (size_t) n >= size) {
        errno = ENOSPC;
        return -1;
    }

    return caud_note_sign(s, buf, n, buf, size, len);
}


/* the body "<origin>\n<size>\n<root>\n[extension lines]" */
static int
caud_checkpoint_body(const char *p, size_t n, caud_checkpoint_t *cp,
    char *err, size_t errlen)
{
    size_t       k, got;
    uint64_t     size;
    const char  *nl, *line;

    nl = memchr(p, '\n', n);
    if (nl == NULL || nl == p || (size_t) (nl - p) >= CAUD_ORIGIN_MAX) {
        caud_errf(err, errlen, "checkpoint: bad origin line");
        return -1;
    }

    memcpy(cp->origin, p, nl - p);
    cp->origin[nl - p] = '\0';

    line = nl + 1;
    nl = memchr(line, '\n', p + n - line);
    if (nl == NULL || nl == line || nl - line > 20
        || (line[0] == '0' && nl - line > 1))
    {
        caud_errf(err, errlen, "checkpoint: bad tree size line");
        return -1;
    }

    size = 0;
    for (k = 0; line + k < nl; k++) {
        if (line[k] < '0' || line[k] > '9'
            || size > (UINT64_MAX - (line[k] - '0')) / 10)
        {
            caud_errf(err, errlen, "checkpoint: bad tree size line");
            return -1;
        }

        size = size * 10 + (line[k] - '0');
    }

    cp->size = size;

    line = nl + 1;
    nl = memchr(line, '\n', p + n - line);
    if (nl == NULL
        || caud_b64_decode(cp->root, CAUD_HASH_LEN, line, nl - line, &got)
           != 0
        || got != CAUD_HASH_LEN)
    {
        caud_errf(err, errlen, "checkpoint: bad root hash line");
        return -1;
    }

    /* extension lines: allowed, signed with the rest, not interpreted */
    for (line = nl + 1; line < p + n; line = nl + 1) {
        nl = memchr(line, '\n', p + n - line);
        if (nl == NULL || nl == line) {
            caud_errf(err, errlen, "checkpoint: bad extension line");
            return -1;
        }
    }

    return 0;
}


/*
 * Checks one signature line "— <name> <base64>": 1 if it is v's and
 * valid, 0 if it is another key's, -1 if it is malformed or v's and
 * invalid.
 */
static int
caud_note_sig(const caud_verifier_t *v, const char *text, size_t tlen,
    const char *line, size_t n)
{
    int          rc;
    size_t       dash, got, nlen;
    uint8_t      sig[CAUD_KEYID_LEN + CAUD_SIG_LEN + 1];
    EVP_MD_CTX  *ctx;
    const char  *name, *sp;

    dash = sizeof(CAUD_EM_DASH) - 1;

    if (n <= dash || memcmp(line, CAUD_EM_DASH, dash) != 0) {
        return -1;
    }

    name = line + dash;
    sp = memchr(name, ' ', line + n - name);
    if (sp == NULL || sp == name) {
        return -1;
    }

    nlen = sp - name;

    if (caud_b64_decode(sig, sizeof(sig), sp + 1, line + n - sp - 1, &got)
        != 0 || got < CAUD_KEYID_LEN + 1)
    {
        return -1;
    }

    if (nlen != strlen(v->name) || memcmp(name, v->name, nlen) != 0
        || memcmp(sig, v->keyid, CAUD_KEYID_LEN) != 0)
    {
        return 0;
    }

    if (got != CAUD_KEYID_LEN + CAUD_SIG_LEN) {
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        return -1;
    }

    rc = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, v->pkey) == 1
         && EVP_DigestVerify(ctx, sig + CAUD_KEYID_LEN, CAUD_SIG_LEN,
                             (const unsigned char *) text, tlen) == 1;

    EVP_MD_CTX_free(ctx);
    ERR_clear_error();

    return rc ? 1 : -1;
}


int
caud_note_verify(const caud_verifier_t *v, const char *note, size_t len,
    size_t *text_len, char *err, size_t errlen)
{
    int          rc, ok, nsig;
    size_t       i, tlen;
    const char  *sigs, *line, *nl;

    if (len == 0 || len > CAUD_NOTE_MAX || note[len - 1] != '\n') {
        caud_errf(err, errlen, "note: empty, too long, or no final newline");
        return -1;
    }

    /* text and signatures split at the last blank line, as in
     * golang.org/x/mod/sumdb/note, which the C2SP spec follows */
    tlen = 0;
    for (i = len - 1; i > 0; i--) {
        if (note[i] == '\n' && note[i - 1] == '\n') {
            tlen = i;
            break;
        }
    }

    if (tlen == 0) {
        caud_errf(err, errlen, "note: no signature block");
        return -1;
    }

    for (i = 0; i < tlen; i++) {
        if ((unsigned char) note[i] < 0x20 && note[i] != '\n') {
            caud_errf(err, errlen, "note: control character in the text");
            return -1;
        }
    }

    sigs = note + tlen + 1;
    ok = 0;
    nsig = 0;

    for (line = sigs; line < note + len; line = nl + 1) {
        nl = memchr(line, '\n', note + len - line);

        if (++nsig > 100) {
            caud_errf(err, errlen, "note: too many signatures");
            return -1;
        }

        rc = caud_note_sig(v, note, tlen, line, nl - line);
        if (rc < 0) {
            caud_errf(err, errlen, "note: bad signature line %d", nsig);
            return -1;
        }

        ok |= rc;
    }

    if (!ok) {
        caud_errf(err, errlen, "note: not signed by \"%s\"", v->name);
        return -1;
    }

    *text_len = tlen;

    return 0;
}


int
caud_checkpoint_verify(const caud_verifier_t *v, const char *note,
    size_t len, const char *origin, caud_checkpoint_t *cp, char *err,
    size_t errlen)
{
    size_t  tlen;

    if (caud_note_verify(v, note, len, &tlen, err, errlen) != 0) {
        return -1;
    }

    if (caud_checkpoint_body(note, tlen, cp, err, errlen) != 0) {
        return -1;
    }

    if (origin && strcmp(origin, cp->origin) != 0) {
        caud_errf(err, errlen, "checkpoint: origin \"%s\", expected \"%s\"",
                  cp->origin, origin);
        return -1;
    }

    return 0;
}


/*
 * The text of a note ends at its last blank line, as caud_note_verify()
 * splits it; the signatures are not checked here.
 */
int
caud_checkpoint_parse(const char *note, size_t len, caud_checkpoint_t *cp,
    char *err, size_t errlen)
{
    size_t  i;

    if (len == 0 || len > CAUD_NOTE_MAX || note[len - 1] != '\n') {
        caud_errf(err, errlen, "note: empty, too long, or no final newline");
        return -1;
    }

    for (i = len - 1; i > 0; i--) {
        if (note[i] == '\n' && note[i - 1] == '\n') {
            return caud_checkpoint_body(note, i, cp, err, errlen);
        }
    }

    caud_errf(err, errlen, "note: no signature block");
    return -1;
}


int
caud_checkpoint_check_journal(const char *dir, uint32_t writer_id,
    const caud_checkpoint_t *cp, char *err, size_t errlen)
{
    int             rc;
    uint64_t        last;
    caud_frame_t    f;
    caud_reader_t  *r;
    uint8_t         head[CAUD_HASH_LEN];

    memset(head, 0, sizeof(head));
    rc = 0;

    if (caud_reader_open(dir, writer_id, 1, &r, err, errlen) != 0) {
        return -1;
    }

    last = 0;

    while (last < cp->size && (rc = caud_reader_next(r, &f)) == 1) {
        last = f.seq;
        memcpy(head, f.entry_hash, CAUD_HASH_LEN);
    }

    if (last < cp->size) {
        if (rc < 0) {
            caud_errf(err, errlen, "%s", caud_reader_error(r));

        } else {
            caud_errf(err, errlen, "journal %" PRIu32 " ends at seq %" PRIu64
                      " but the checkpoint covers %" PRIu64 ": records "
                      "missing (tail truncated)", writer_id, last, cp->size);
        }

        caud_reader_close(r);
        return -1;
    }

    caud_reader_close(r);

    /* the chain head commits to every record up to it */
    if (memcmp(head, cp->root, CAUD_HASH_LEN) != 0) {
        caud_errf(err, errlen, "journal %" PRIu32 " seq %" PRIu64 ": "
                  "entry_hash differs from the checkpoint root (history "
                  "rewritten)", writer_id, cp->size);
        return -1;
    }

    return 0;
}


/* ------------------------------------------------------------------ */
/* RFC 6962 2.1 tree head */

void
caud_merkle_init(caud_merkle_t *m)
{
    memset(m, 0, sizeof(caud_merkle_t));
}


int
caud_merkle_leaf(caud_hasher_t *h, const void *data, size_t len,
    uint8_t out[CAUD_HASH_LEN])
{
    return caud_hasher_prefixed(h, 0x00, data, len, NULL, 0, out);
}


/*
 * level[i] holds the root of the perfect subtree of 2^i leaves when bit
 * i of size is set: adding a leaf carries like a binary increment.
 */
int
caud_merkle_append(caud_merkle_t *m, caud_hasher_t *h,
    const uint8_t leaf[CAUD_HASH_LEN])
{
    int      i;
    uint8_t  node[CAUD_HASH_LEN];

    if (m->size == UINT64_MAX) {
        return -1;
    }

    memcpy(node, leaf, CAUD_HASH_LEN);

    for (i = 0; m->size >> i & 1; i++) {
        if (caud_hasher_prefixed(h, 0x01, m->level[i], CAUD_HASH_LEN, node,
                                 CAUD_HASH_LEN, node)
            != 0)
        {
            return -1;
        }
    }

    memcpy(m->level[i], node, CAUD_HASH_LEN);
    m->size++;

    return 0;
}


/* MTH: the subtrees folded from the smallest (rightmost) up */
int
caud_merkle_root(const caud_merkle_t *m, caud_hasher_t *h,
    uint8_t out[CAUD_HASH_LEN])
{
    int      i, have;
    uint8_t  acc[CAUD_HASH_LEN];

    have = 0;

    for (i = 0; i < 64; i++) {
        if (!(m->size >> i & 1)) {
            continue;
        }

        if (!have) {
            memcpy(acc, m->level[i], CAUD_HASH_LEN);
            have = 1;
            continue;
        }

        if (caud_hasher_prefixed(h, 0x01, m->level[i], CAUD_HASH_LEN, acc,
                                 CAUD_HASH_LEN, acc)
            != 0)
        {
            return -1;
        }
    }

    memcpy(out, have ? acc : caud_empty_root, CAUD_HASH_LEN);

    return 0;
}
