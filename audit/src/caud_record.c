
/*
 * Audit records (COMPLIANCE.md 7.1): building them as jansson objects,
 * their canonical encoding, and the entry hash that chains them.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "caud.h"


#define CAUD_RECORD_VERSION  1

/*
 * The canonical form is jansson's JSON_COMPACT | JSON_SORT_KEYS without
 * JSON_ENSURE_ASCII: "\uD83D\uDE00" and the raw UTF-8 of the same emoji
 * are two encodings of one string, and the raw one is shorter, readable
 * in the journal and what MariaDB's utf8mb4 stores anyway.
 */


struct caud_hasher_s {
    EVP_MD      *md;
    EVP_MD_CTX  *ctx;
};


static int caud_record_check(const json_t *v, int depth);


int64_t
caud_now_us(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return 0;
    }

    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


json_t *
caud_record_new(const char *event, caud_status_e status, int64_t ts_utc_us)
{
    json_t             *rec;
    static const char  *names[] = { "attempt", "success", "fail" };

    if (event == NULL || event[0] == '\0'
        || (unsigned) status >= sizeof(names) / sizeof(names[0]))
    {
        errno = EINVAL;
        return NULL;
    }

    rec = json_object();
    if (rec == NULL) {
        return NULL;
    }

    if (json_object_set_new(rec, "v", json_integer(CAUD_RECORD_VERSION))
        || json_object_set_new(rec, "event", json_string(event))
        || json_object_set_new(rec, "status", json_string(names[status]))
        || json_object_set_new(rec, "ts_utc_us", json_integer(ts_utc_us)))
    {
        goto fail;
    }

    return rec;

fail:

    json_decref(rec);
    errno = EINVAL;
    return NULL;
}


/* adds key: s to obj unless s is NULL; json_string() checks UTF-8 */
static int
caud_set_str(json_t *obj, const char *key, const char *s)
{
    if (s == NULL) {
        return 0;
    }

    return json_object_set_new(obj, key, json_string(s)) == 0 ? 0 : -1;
}


/* the sub-object rec[key], created on first use */
static json_t *
caud_sub(json_t *rec, const char *key)
{
    json_t  *o;

    o = json_object_get(rec, key);
    if (o != NULL) {
        return json_is_object(o) ? o : NULL;
    }

    o = json_object();
    if (o == NULL || json_object_set_new(rec, key, o) != 0) {
        return NULL;
    }

    return o;
}


int
caud_record_set_actor(json_t *rec, const caud_actor_t *a)
{
    json_t  *o;

    o = caud_sub(rec, "actor");
    if (o == NULL) {
        goto fail;
    }

    if (caud_set_str(o, "user", a->user)
        || caud_set_str(o, "ldap_dn", a->ldap_dn)
        || caud_set_str(o, "session_id", a->session_id)
        || caud_set_str(o, "ip", a->ip)
        || caud_set_str(o, "transport", a->transport)
        || caud_set_str(o, "client", a->client))
    {
        goto fail;
    }

    return 0;

fail:

    errno = EINVAL;
    return -1;
}


int
caud_record_set_object(json_t *rec, const char *type, const char *id)
{
    json_t  *o;

    o = caud_sub(rec, "object");
    if (o == NULL || caud_set_str(o, "type", type)
        || caud_set_str(o, "id", id))
    {
        errno = EINVAL;
        return -1;
    }

    return 0;
}


int
caud_record_set_error(json_t *rec, const char *code, const char *description)
{
    json_t  *o;

    o = caud_sub(rec, "error");
    if (o == NULL || caud_set_str(o, "code", code)
        || caud_set_str(o, "description", description))
    {
        errno = EINVAL;
        return -1;
    }

    return 0;
}


int
caud_record_set_param(json_t *rec, const char *key, json_t *value)
{
    json_t  *o;

    if (value == NULL) {
        goto fail;
    }

    o = caud_sub(rec, "params");
    if (o == NULL) {
        json_decref(value);
        goto fail;
    }

    /* json_object_set_new() steals value even when it fails */
    if (json_object_set_new(o, key, value) != 0) {
        goto fail;
    }

    return 0;

fail:

    errno = EINVAL;
    return -1;
}


int
caud_record_set_param_str(json_t *rec, const char *key, const char *s,
    size_t len)
{
    /* json_stringn() refuses invalid UTF-8: a stanza that got past the
     * XML parser is valid UTF-8, anything else is our bug */
    return caud_record_set_param(rec, key, json_stringn(s, len));
}


/*
 * Refuses what would make the encoding unstable or ambiguous: reals,
 * keys with NUL (jansson would sort them by length-aware memcmp, other
 * languages by C string), and absurd nesting.
 */
static int
caud_record_check(const json_t *v, int depth)
{
    size_t       i, klen;
    json_t      *e;
    const char  *key;

    if (depth > 32) {
        return -1;
    }

    switch (json_typeof(v)) {

    case JSON_REAL:
        return -1;

    case JSON_OBJECT:
        json_object_keylen_foreach((json_t *) v, key, klen, e) {
            if (memchr(key, '\0', klen) != NULL
                || caud_record_check(e, depth + 1) != 0)
            {
                return -1;
            }
        }
        return 0;

    case JSON_ARRAY:
        json_array_foreach(v, i, e) {
            if (caud_record_check(e, depth + 1) != 0) {
                return -1;
            }
        }
        return 0;

    default:
        return 0;
    }
}


/* room for n more bytes in b, within the record bound */
static int
caud_reserve(caud_buf_t *b, size_t n)
{
    size_t    cap;
    uint8_t  *d;

    if (b->len + n <= b->cap) {
        return 0;
    }

    if (b->len + n > CAUD_MAX_RECORD + CAUD_FRAME_OVERHEAD) {
        return -1;
    }

    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
        cap *= 2;
    }

    d = realloc(b->data, cap);
    if (d == NULL) {
        return -1;
    }

    b->data = d;
    b->cap = cap;

    return 0;
}


/*
 * What follows the backslash for each byte that RFC 8259 section 7 makes
 * us escape ('u' for \u00XX), 0 for the bytes copied as they are.
 */
static const unsigned char  caud_esc[256] = {
    [0x00 ... 0x07] = 'u', ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n',
    [0x0b] = 'u', ['\f'] = 'f', ['\r'] = 'r', [0x0e ... 0x1f] = 'u',
    ['"'] = '"', ['\\'] = '\\'
};


#define CAUD_ONES   0x0101010101010101ULL
#define CAUD_HIGHS  0x8080808080808080ULL

/*
 * Whether any of the 8 bytes in v must be escaped: a byte below 0x20, a
 * '"' or a '\' (the "has less than" and "has zero byte" word tests of
 * Bit Twiddling Hacks; both are exact for "any").  Long strings (the
 * stanza, the body) are mostly plain, so they are copied a word at a
 * time, and the table above handles the rest.
 */
static inline uint64_t
caud_esc8(uint64_t v)
{
    uint64_t  q, b;

    q = v ^ (CAUD_ONES * '"');
    b = v ^ (CAUD_ONES * '\\');

    return ((v - CAUD_ONES * 0x20) & ~v)
           | ((q - CAUD_ONES) & ~q)
           | ((b - CAUD_ONES) & ~b);
}


/*
 * A JSON string as jansson writes it without JSON_ENSURE_ASCII: '"' and
 * '\\' escaped, \b \f \n \r \t, other bytes below 0x20 as \u00XX in
 * upper case, everything else (DEL, '/', U+2028) as is.
 */
static int
caud_enc_string(caud_buf_t *b, const char *s, size_t len)
{
    size_t          i, run;
    uint8_t        *p;
    uint64_t        v;
    unsigned char   c;
    static const char  hex[] = "0123456789ABCDEF";

    if (caud_reserve(b, len + 2) != 0) {
        return -1;
    }

    b->data[b->len++] = '"';

    for (i = 0; i < len; i += run) {
        run = 0;

        while (len - i - run >= 8) {
            memcpy(&v, s + i + run, 8);
            if (caud_esc8(v) & CAUD_HIGHS) {
                break;
            }
            run += 8;
        }

        while (i + run < len && caud_esc[(unsigned char) s[i + run]] == 0) {
            run++;
        }

        if (run) {
            memcpy(b->data + b->len, s + i, run);
            b->len += run;
            continue;
        }

        /* one byte to escape: up to 6 bytes for it, 1 for the rest */
        if (caud_reserve(b, 6 + len - i) != 0) {
            return -1;
        }

        p = b->data + b->len;
        c = s[i];
        run = 1;
        *p++ = '\\';
        *p++ = caud_esc[c];

        if (caud_esc[c] == 'u') {
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }

        b->len = p - b->data;
    }

    b->data[b->len++] = '"';

    return 0;
}


static int
caud_enc_int(caud_buf_t *b, json_int_t v)
{
    char      tmp[24], *p;
    uint64_t  u;

    u = v < 0 ? 0 - (uint64_t) v : (uint64_t) v;
    p = tmp + sizeof(tmp);

    do {
        *--p = (char) ('0' + u % 10);
        u /= 10;
    } while (u);

    if (v < 0) {
        *--p = '-';
    }

    if (caud_reserve(b, tmp + sizeof(tmp) - p) != 0) {
        return -1;
    }

    memcpy(b->data + b->len, p, tmp + sizeof(tmp) - p);
    b->len += tmp + sizeof(tmp) - p;

    return 0;
}


static int
caud_enc_raw(caud_buf_t *b, const char *s, size_t n)
{
    if (caud_reserve(b, n) != 0) {
        return -1;
    }

    memcpy(b->data + b->len, s, n);
    b->len += n;

    return 0;
}


typedef struct {
    const char  *key;
    size_t       len;
    json_t      *value;
} caud_kv_t;


/* bytewise, as jansson's JSON_SORT_KEYS (memcmp, then length) */
static int
caud_kv_less(const caud_kv_t *a, const caud_kv_t *b)
{
    int  rc;

    rc = memcmp(a->key, b->key, a->len < b->len ? a->len : b->len);

    return rc < 0 || (rc == 0 && a->len < b->len);
}


static int caud_enc_value(caud_buf_t *b, const json_t *v, int depth);


static int
caud_enc_object(caud_buf_t *b, json_t *o, int depth)
{
    int          rc;
    size_t       i, k, n, klen;
    json_t      *e;
    caud_kv_t    stack[32], *kv, t;
    const char  *key;

    n = json_object_size(o);
    kv = n <= 32 ? stack : malloc(n * sizeof(caud_kv_t));
    if (kv == NULL) {
        return -1;
    }

    i = 0;
    rc = -1;

    json_object_keylen_foreach(o, key, klen, e) {
        /* a key with a NUL would sort differently in other languages */
        if (i == n || memchr(key, '\0', klen) != NULL) {
            goto done;
        }

        kv[i].key = key;
        kv[i].len = klen;
        kv[i].value = e;
        i++;
    }

    /* insertion sort: records have a handful of keys per object */
    for (i = 1; i < n; i++) {
        t = kv[i];
        for (k = i; k > 0 && caud_kv_less(&t, &kv[k - 1]); k--) {
            kv[k] = kv[k - 1];
        }
        kv[k] = t;
    }

    if (caud_enc_raw(b, "{", 1) != 0) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if ((i && caud_enc_raw(b, ",", 1) != 0)
            || caud_enc_string(b, kv[i].key, kv[i].len) != 0
            || caud_enc_raw(b, ":", 1) != 0
            || caud_enc_value(b, kv[i].value, depth + 1) != 0)
        {
            goto done;
        }
    }

    rc = caud_enc_raw(b, "}", 1);

done:

    if (kv != stack) {
        free(kv);
    }

    return rc;
}


/*
 * The canonical encoding, written directly: byte for byte what jansson's
 * json_dumps(JSON_COMPACT | JSON_SORT_KEYS) gives (the unit test keeps
 * that true), at a fifth of the cost, because json_dump_callback()
 * allocates and sorts a key array per object and calls back per token.
 * Reals are refused: their text is not byte-stable across libraries.
 */
static int
caud_enc_value(caud_buf_t *b, const json_t *v, int depth)
{
    size_t   i;
    json_t  *e;

    if (depth > 32) {
        return -1;
    }

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        return caud_enc_object(b, (json_t *) v, depth);

    case JSON_ARRAY:
        if (caud_enc_raw(b, "[", 1) != 0) {
            return -1;
        }

        json_array_foreach(v, i, e) {
            if ((i && caud_enc_raw(b, ",", 1) != 0)
                || caud_enc_value(b, e, depth + 1) != 0)
            {
                return -1;
            }
        }

        return caud_enc_raw(b, "]", 1);

    case JSON_STRING:
        return caud_enc_string(b, json_string_value(v), json_string_length(v));

    case JSON_INTEGER:
        return caud_enc_int(b, json_integer_value(v));

    case JSON_TRUE:
        return caud_enc_raw(b, "true", 4);

    case JSON_FALSE:
        return caud_enc_raw(b, "false", 5);

    case JSON_NULL:
        return caud_enc_raw(b, "null", 4);

    default:
        return -1;
    }
}


int
caud_record_encode(const json_t *rec, caud_buf_t *b)
{
    size_t  start;

    start = b->len;

    if (!json_is_object(rec)) {
        errno = EINVAL;
        return -1;
    }

    if (caud_enc_value(b, rec, 0) != 0 || b->len - start > CAUD_MAX_RECORD) {
        b->len = start;
        errno = EINVAL;
        return -1;
    }

    return 0;
}


/*
 * RFC 3629 section 4, as jansson's utf8_check_string(): no overlong
 * forms, no surrogates, nothing above U+10FFFF; NUL is a character.
 */
static int
caud_utf8_valid(const char *str, size_t len)
{
    size_t          i, n, k;
    uint32_t        cp;
    uint64_t        v;
    const uint8_t  *s;

    s = (const uint8_t *) str;

    for (i = 0; i < len; i += n) {
        if (s[i] < 0x80) {
            /* ASCII runs a word at a time */
            for (n = 1; len - i - n >= 8; n += 8) {
                memcpy(&v, s + i + n, 8);
                if (v & CAUD_HIGHS) {
                    break;
                }
            }
            continue;
        }

        if (s[i] >= 0xc2 && s[i] <= 0xdf) {
            n = 2;
            cp = s[i] & 0x1f;
        } else if (s[i] >= 0xe0 && s[i] <= 0xef) {
            n = 3;
            cp = s[i] & 0x0f;
        } else if (s[i] >= 0xf0 && s[i] <= 0xf4) {
            n = 4;
            cp = s[i] & 0x07;
        } else {
            return 0;
        }

        if (len - i < n) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)
            || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


/* ,"key":"value" (or without the comma first); NULL s: nothing */
static int
caud_flat_member(caud_buf_t *b, int *first, const char *key,
    const char *s, size_t len)
{
    if (s == NULL) {
        return 0;
    }

    if (!caud_utf8_valid(s, len)) {
        return -1;
    }

    if ((!*first && caud_enc_raw(b, ",", 1) != 0)
        || caud_enc_string(b, key, strlen(key)) != 0
        || caud_enc_raw(b, ":", 1) != 0
        || caud_enc_string(b, s, len) != 0)
    {
        return -1;
    }

    *first = 0;

    return 0;
}


static int
caud_flat_str(caud_buf_t *b, int *first, const char *key, const char *s)
{
    return caud_flat_member(b, first, key, s, s ? strlen(s) : 0);
}


/* "actor":{...}, its keys in bytewise order */
static int
caud_flat_actor(caud_buf_t *b, const caud_actor_t *a)
{
    int  first;

    first = 1;

    if (caud_enc_raw(b, "\"actor\":{", 9) != 0
        || caud_flat_str(b, &first, "client", a->client) != 0
        || caud_flat_str(b, &first, "ip", a->ip) != 0
        || caud_flat_str(b, &first, "ldap_dn", a->ldap_dn) != 0
        || caud_flat_str(b, &first, "session_id", a->session_id) != 0
        || caud_flat_str(b, &first, "transport", a->transport) != 0
        || caud_flat_str(b, &first, "user", a->user) != 0)
    {
        return -1;
    }

    return caud_enc_raw(b, "}", 1);
}


/* ,"params":{...}, sorted as caud_enc_object() sorts */
static int
caud_flat_params(caud_buf_t *b, const caud_flat_t *r)
{
    int                       first;
    size_t                    i, k;
    caud_kv_t                 kv[CAUD_FLAT_PARAMS], t;
    const caud_flat_param_t  *p;

    if (r->nparams == 0) {
        return 0;
    }

    if (r->nparams > CAUD_FLAT_PARAMS) {
        return -1;
    }

    /* value stays unused: each sorted key points into its own param */
    for (i = 0; i < r->nparams; i++) {
        kv[i].key = r->params[i].key;
        kv[i].len = strlen(r->params[i].key);
        kv[i].value = NULL;
    }

    for (i = 1; i < r->nparams; i++) {
        t = kv[i];
        for (k = i; k > 0 && caud_kv_less(&t, &kv[k - 1]); k--) {
            kv[k] = kv[k - 1];
        }
        kv[k] = t;
    }

    if (caud_enc_raw(b, ",\"params\":{", 11) != 0) {
        return -1;
    }

    first = 1;

    for (i = 0; i < r->nparams; i++) {
        /* the sorted keys point into the params: find each one's own */
        for (p = r->params; p->key != kv[i].key; p++) { /* void */ }

        if (p->s == NULL
            || caud_flat_member(b, &first, p->key, p->s, p->len) != 0)
        {
            return -1;
        }
    }

    return caud_enc_raw(b, "}", 1);
}


int
caud_flat_encode(const caud_flat_t *r, uint64_t seq, caud_buf_t *b)
{
    int                 first;
    size_t              start;
    static const char  *names[] = { "attempt", "success", "fail" };

    start = b->len;

    if (r->event == NULL || r->event[0] == '\0'
        || (unsigned) r->status >= sizeof(names) / sizeof(names[0]))
    {
        errno = EINVAL;
        return -1;
    }

    /* top-level keys in bytewise order: actor, error, event, object,
     * params, seq, status, ts_utc_us, v */
    if (caud_enc_raw(b, "{", 1) != 0 || caud_flat_actor(b, &r->actor) != 0) {
        goto fail;
    }

    if (r->error_code || r->error_description) {
        first = 1;
        if (caud_enc_raw(b, ",\"error\":{", 10) != 0
            || caud_flat_str(b, &first, "code", r->error_code) != 0
            || caud_flat_str(b, &first, "description", r->error_description)
               != 0
            || caud_enc_raw(b, "}", 1) != 0)
        {
            goto fail;
        }
    }

    first = 0;

    if (caud_flat_str(b, &first, "event", r->event) != 0) {
        goto fail;
    }

    if (r->object_type) {
        first = 1;
        if (caud_enc_raw(b, ",\"object\":{", 11) != 0
            || caud_flat_member(b, &first, "id", r->object_id,
                                r->object_id_len) != 0
            || caud_flat_str(b, &first, "type", r->object_type) != 0
            || caud_enc_raw(b, "}", 1) != 0)
        {
            goto fail;
        }
    }

    first = 0;

    if (caud_flat_params(b, r) != 0
        || caud_enc_raw(b, ",\"seq\":", 7) != 0
        || caud_enc_int(b, (json_int_t) seq) != 0
        || caud_flat_str(b, &first, "status", names[r->status]) != 0
        || caud_enc_raw(b, ",\"ts_utc_us\":", 13) != 0
        || caud_enc_int(b, (json_int_t) r->ts_utc_us) != 0
        || caud_enc_raw(b, ",\"v\":", 5) != 0
        || caud_enc_int(b, CAUD_RECORD_VERSION) != 0
        || caud_enc_raw(b, "}", 1) != 0
        || b->len - start > CAUD_MAX_RECORD)
    {
        goto fail;
    }

    return 0;

fail:

    b->len = start;
    errno = EINVAL;
    return -1;
}


json_t *
caud_record_decode(const void *p, size_t len, char *err, size_t errlen)
{
    json_t        *rec;
    json_error_t   e;

    rec = json_loadb(p, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (rec == NULL) {
        snprintf(err, errlen, "record: %s at byte %d", e.text, e.position);
        return NULL;
    }

    if (!json_is_object(rec) || caud_record_check(rec, 0) != 0) {
        snprintf(err, errlen, "record: not a canonical audit object");
        json_decref(rec);
        return NULL;
    }

    return rec;
}


void
caud_buf_free(caud_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}


caud_hasher_t *
caud_hasher_new(void)
{
    caud_hasher_t  *h;

    h = calloc(1, sizeof(caud_hasher_t));
    if (h == NULL) {
        return NULL;
    }

    /* an explicit fetch, once: EVP_sha256() would look the provider up
     * on every EVP_DigestInit, a measurable cost at 10^6 records/s */
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (h->md == NULL) {
        goto fail;
    }

    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL) {
        goto fail;
    }

    return h;

fail:

    caud_hasher_free(h);
    return NULL;
}


int
caud_hasher_prefixed(caud_hasher_t *h, uint8_t prefix, const void *a,
    size_t alen, const void *b, size_t blen, uint8_t out[CAUD_HASH_LEN])
{
    unsigned int  n;

    if (EVP_DigestInit_ex2(h->ctx, h->md, NULL) != 1
        || EVP_DigestUpdate(h->ctx, &prefix, 1) != 1
        || (alen && EVP_DigestUpdate(h->ctx, a, alen) != 1)
        || (blen && EVP_DigestUpdate(h->ctx, b, blen) != 1)
        || EVP_DigestFinal_ex(h->ctx, out, &n) != 1
        || n != CAUD_HASH_LEN)
    {
        return -1;
    }

    return 0;
}


int
caud_hasher_entry(caud_hasher_t *h, const void *canon, size_t len,
    const uint8_t prev[CAUD_HASH_LEN], uint8_t out[CAUD_HASH_LEN])
{
    /* 0x00: RFC 6962 2.1 leaf domain, so an entry hash can never be
     * confused with an interior node (0x01) of a tree over them */
    return caud_hasher_prefixed(h, 0x00, canon, len, prev, CAUD_HASH_LEN,
                                out);
}


void
caud_hasher_free(caud_hasher_t *h)
{
    if (h == NULL) {
        return;
    }

    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h);
}
