
/*
 * The TLS 1.3 record layer (RFC 8446) for a server, after the handshake.
 *
 * A connection keeps per direction the traffic secret, the AEAD key,
 * the static IV and the sequence number (ngx_xmpp_tlsrec_dir_t); the
 * cipher contexts are the process's, one per suite and direction, and
 * are re-keyed for every record, so an idle connection holds none.
 * Records are opened and sealed in place.
 */


#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "ngx_xmpp_tlsrec.h"


typedef struct {
    uint16_t          id;           /* B.4 */
    const char       *name;
    const char       *cipher;
    const char       *digest;
    size_t            key_len;
    size_t            hash_len;
} ngx_xmpp_tlsrec_suite_t;


/* B.4: the three AEAD suites of RFC 8446 this layer implements */
static const ngx_xmpp_tlsrec_suite_t  ngx_xmpp_tlsrec_suites[] = {
    { 0x1301, "TLS_AES_128_GCM_SHA256", "AES-128-GCM", "SHA256", 16, 32 },
    { 0x1302, "TLS_AES_256_GCM_SHA384", "AES-256-GCM", "SHA384", 32, 48 },
    { 0x1303, "TLS_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305",
      "SHA256", 32, 32 }
};

#define NGX_XMPP_TLSREC_NSUITES  3


static EVP_CIPHER_CTX  *ngx_xmpp_tlsrec_ctx[NGX_XMPP_TLSREC_NSUITES][2];
static EVP_KDF         *ngx_xmpp_tlsrec_kdf;


static EVP_CIPHER_CTX *ngx_xmpp_tlsrec_cipher(unsigned suite, int enc);
static int ngx_xmpp_tlsrec_expand_label(const ngx_xmpp_tlsrec_suite_t *cs,
    const unsigned char *secret, const char *label, unsigned char *out,
    size_t len);
static int ngx_xmpp_tlsrec_keys(const ngx_xmpp_tlsrec_suite_t *cs,
    ngx_xmpp_tlsrec_dir_t *d);
static int ngx_xmpp_tlsrec_update(const ngx_xmpp_tlsrec_suite_t *cs,
    ngx_xmpp_tlsrec_dir_t *d);
static void ngx_xmpp_tlsrec_nonce(const ngx_xmpp_tlsrec_dir_t *d,
    unsigned char *nonce);
static ngx_xmpp_tlsrec_rc_e ngx_xmpp_tlsrec_inner(ngx_xmpp_tlsrec_t *t,
    unsigned char *p, size_t n, unsigned char **data, size_t *dlen,
    uint8_t *alert);
static ngx_xmpp_tlsrec_rc_e ngx_xmpp_tlsrec_handshake(ngx_xmpp_tlsrec_t *t,
    const unsigned char *p, size_t n, uint8_t *alert);


int
ngx_xmpp_tlsrec_suite_supported(uint16_t id)
{
    unsigned  i;

    for (i = 0; i < NGX_XMPP_TLSREC_NSUITES; i++) {
        if (ngx_xmpp_tlsrec_suites[i].id == id) {
            return 1;
        }
    }

    return 0;
}


const char *
ngx_xmpp_tlsrec_suite_name(const ngx_xmpp_tlsrec_t *t)
{
    return ngx_xmpp_tlsrec_suites[t->suite].name;
}


/*
 * Keys from the two application_traffic_secret_0 (7.1) that OpenSSL's
 * key log gave; both sequence numbers start at 0 (5.3), which holds
 * only if nothing was sent or read under these keys before.
 */
int
ngx_xmpp_tlsrec_init(ngx_xmpp_tlsrec_t *t, uint16_t id,
    const unsigned char *rd_secret, const unsigned char *wr_secret,
    size_t len)
{
    unsigned                        i;
    const ngx_xmpp_tlsrec_suite_t  *cs;

    memset(t, 0, sizeof(ngx_xmpp_tlsrec_t));

    for (i = 0; i < NGX_XMPP_TLSREC_NSUITES; i++) {
        if (ngx_xmpp_tlsrec_suites[i].id == id) {
            break;
        }
    }

    if (i == NGX_XMPP_TLSREC_NSUITES
        || len != ngx_xmpp_tlsrec_suites[i].hash_len)
    {
        return -1;
    }

    cs = &ngx_xmpp_tlsrec_suites[i];
    t->suite = (uint8_t) i;

    memcpy(t->rd.secret, rd_secret, len);
    memcpy(t->wr.secret, wr_secret, len);

    if (ngx_xmpp_tlsrec_keys(cs, &t->rd) != 0
        || ngx_xmpp_tlsrec_keys(cs, &t->wr) != 0
        || ngx_xmpp_tlsrec_cipher(i, 0) == NULL
        || ngx_xmpp_tlsrec_cipher(i, 1) == NULL)
    {
        ngx_xmpp_tlsrec_wipe(t);
        return -1;
    }

    return 0;
}


void
ngx_xmpp_tlsrec_wipe(ngx_xmpp_tlsrec_t *t)
{
    OPENSSL_cleanse(t, sizeof(ngx_xmpp_tlsrec_t));
}


/* the process's contexts, made on first use; the fuzzer frees them */
void
ngx_xmpp_tlsrec_free(void)
{
    unsigned  i;

    for (i = 0; i < NGX_XMPP_TLSREC_NSUITES; i++) {
        EVP_CIPHER_CTX_free(ngx_xmpp_tlsrec_ctx[i][0]);
        EVP_CIPHER_CTX_free(ngx_xmpp_tlsrec_ctx[i][1]);
        ngx_xmpp_tlsrec_ctx[i][0] = NULL;
        ngx_xmpp_tlsrec_ctx[i][1] = NULL;
    }

    EVP_KDF_free(ngx_xmpp_tlsrec_kdf);
    ngx_xmpp_tlsrec_kdf = NULL;
}


static EVP_CIPHER_CTX *
ngx_xmpp_tlsrec_cipher(unsigned suite, int enc)
{
    EVP_CIPHER      *cipher;
    EVP_CIPHER_CTX  *ctx;

    ctx = ngx_xmpp_tlsrec_ctx[suite][enc];
    if (ctx) {
        return ctx;
    }

    cipher = EVP_CIPHER_fetch(NULL, ngx_xmpp_tlsrec_suites[suite].cipher,
                              NULL);
    if (cipher == NULL) {
        return NULL;
    }

    ctx = EVP_CIPHER_CTX_new();

    /*
     * The cipher is set once: re-keying later passes no cipher, which
     * OpenSSL does without freeing and allocating its state again.
     */
    if (ctx == NULL
        || EVP_CipherInit_ex2(ctx, cipher, NULL, NULL, enc, NULL) != 1)
    {
        EVP_CIPHER_CTX_free(ctx);
        EVP_CIPHER_free(cipher);
        return NULL;
    }

    EVP_CIPHER_free(cipher);
    ngx_xmpp_tlsrec_ctx[suite][enc] = ctx;

    return ctx;
}


/*
 * 7.1: HKDF-Expand-Label(Secret, Label, "", Length), the HkdfLabel
 * built here: uint16 length, opaque label<7..255> = "tls13 " + Label,
 * and an empty context.  All our lengths fit one HKDF block.
 */
static int
ngx_xmpp_tlsrec_expand_label(const ngx_xmpp_tlsrec_suite_t *cs,
    const unsigned char *secret, const char *label, unsigned char *out,
    size_t len)
{
    int             rc, mode;
    size_t          n, llen;
    OSSL_PARAM      params[5];
    EVP_KDF_CTX    *kctx;
    unsigned char   info[2 + 1 + 6 + 16 + 1];

    llen = strlen(label);

    info[0] = (unsigned char) (len >> 8);
    info[1] = (unsigned char) len;
    info[2] = (unsigned char) (6 + llen);
    memcpy(&info[3], "tls13 ", 6);
    memcpy(&info[9], label, llen);
    n = 9 + llen;
    info[n++] = 0;

    if (ngx_xmpp_tlsrec_kdf == NULL) {
        ngx_xmpp_tlsrec_kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
        if (ngx_xmpp_tlsrec_kdf == NULL) {
            return -1;
        }
    }

    kctx = EVP_KDF_CTX_new(ngx_xmpp_tlsrec_kdf);
    if (kctx == NULL) {
        return -1;
    }

    mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;

    params[0] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                 (char *) cs->digest, 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                  (void *) secret,
                                                  cs->hash_len);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                  info, n);
    params[4] = OSSL_PARAM_construct_end();

    rc = EVP_KDF_derive(kctx, out, len, params);

    EVP_KDF_CTX_free(kctx);

    return (rc == 1) ? 0 : -1;
}


/* 7.3: [sender]_write_key and [sender]_write_iv from the secret */
static int
ngx_xmpp_tlsrec_keys(const ngx_xmpp_tlsrec_suite_t *cs,
    ngx_xmpp_tlsrec_dir_t *d)
{
    d->seq = 0;

    if (ngx_xmpp_tlsrec_expand_label(cs, d->secret, "key", d->key,
                                     cs->key_len)
        != 0)
    {
        return -1;
    }

    return ngx_xmpp_tlsrec_expand_label(cs, d->secret, "iv", d->iv, 12);
}


/*
 * 7.2: application_traffic_secret_N+1 = HKDF-Expand-Label(
 * application_traffic_secret_N, "traffic upd", "", Hash.length), and
 * new keys from it (the sequence number starts again at 0, 5.3).
 */
static int
ngx_xmpp_tlsrec_update(const ngx_xmpp_tlsrec_suite_t *cs,
    ngx_xmpp_tlsrec_dir_t *d)
{
    unsigned char  next[48];

    if (ngx_xmpp_tlsrec_expand_label(cs, d->secret, "traffic upd", next,
                                     cs->hash_len)
        != 0)
    {
        return -1;
    }

    memcpy(d->secret, next, cs->hash_len);
    OPENSSL_cleanse(next, sizeof(next));

    return ngx_xmpp_tlsrec_keys(cs, d);
}


/* 5.3: the 64-bit sequence number, big-endian, XORed into the IV's end */
static void
ngx_xmpp_tlsrec_nonce(const ngx_xmpp_tlsrec_dir_t *d, unsigned char *nonce)
{
    int  i;

    memcpy(nonce, d->iv, 12);

    for (i = 0; i < 8; i++) {
        nonce[11 - i] ^= (unsigned char) (d->seq >> (8 * i));
    }
}


/* the length of the record at p if its header is there, else 0 */
size_t
ngx_xmpp_tlsrec_record_len(const unsigned char *p, size_t len)
{
    if (len < NGX_XMPP_TLSREC_HDR) {
        return 0;
    }

    return NGX_XMPP_TLSREC_HDR + ((size_t) p[3] << 8 | p[4]);
}


/*
 * Opens the record at the start of p[0..len) in place.  *used is what
 * it took (0 with AGAIN); the header is checked as soon as it is there,
 * so an oversized length is refused before its body is waited for.
 */
ngx_xmpp_tlsrec_rc_e
ngx_xmpp_tlsrec_read(ngx_xmpp_tlsrec_t *t, unsigned char *p, size_t len,
    size_t *used, unsigned char **data, size_t *dlen, uint8_t *alert)
{
    int              n;
    size_t           clen;
    EVP_CIPHER_CTX  *ctx;
    unsigned char    nonce[12];

    *used = 0;
    *alert = 0;

    if (len < NGX_XMPP_TLSREC_HDR) {
        return NGX_XMPP_TLSREC_AGAIN;
    }

    /*
     * 5: after the handshake every record is protected, so its outer
     * type is application_data (5.2); a change_cipher_spec or any
     * plaintext record now is an unexpected_message.
     */
    if (p[0] != NGX_XMPP_TLSREC_APPDATA) {
        *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
        return NGX_XMPP_TLSREC_FATAL;
    }

    /* 5.2: legacy_record_version is always 0x0303 */
    if (p[1] != 3 || p[2] != 3) {
        *alert = NGX_XMPP_TLSREC_DECODE_ERROR;
        return NGX_XMPP_TLSREC_FATAL;
    }

    clen = (size_t) p[3] << 8 | p[4];

    /* 5.2: length at most 2^14 + 256, else record_overflow */
    if (clen > NGX_XMPP_TLSREC_CIPHER) {
        *alert = NGX_XMPP_TLSREC_RECORD_OVERFLOW;
        return NGX_XMPP_TLSREC_FATAL;
    }

    if (len < NGX_XMPP_TLSREC_HDR + clen) {
        return NGX_XMPP_TLSREC_AGAIN;
    }

    *used = NGX_XMPP_TLSREC_HDR + clen;

    /* 5.4: the whole TLSInnerPlaintext is at most 2^14 + 1 bytes */
    if (clen > NGX_XMPP_TLSREC_TAG + NGX_XMPP_TLSREC_PLAIN + 1) {
        *alert = NGX_XMPP_TLSREC_RECORD_OVERFLOW;
        return NGX_XMPP_TLSREC_FATAL;
    }

    /*
     * 5.2: a record that cannot be deprotected (too short to hold a tag
     * and a content type, or a tag that does not verify) is
     * bad_record_mac.  5.3: a sequence number never wraps: the client
     * must have updated its key long before.
     */
    if (clen < NGX_XMPP_TLSREC_TAG + 1 || t->rd.seq == UINT64_MAX) {
        *alert = NGX_XMPP_TLSREC_BAD_RECORD_MAC;
        return NGX_XMPP_TLSREC_FATAL;
    }

    clen -= NGX_XMPP_TLSREC_TAG;
    ctx = ngx_xmpp_tlsrec_ctx[t->suite][0];
    ngx_xmpp_tlsrec_nonce(&t->rd, nonce);

    /* 5.2: additional_data is the record header */
    if (EVP_DecryptInit_ex2(ctx, NULL, t->rd.key, nonce, NULL) != 1
        || EVP_DecryptUpdate(ctx, NULL, &n, p, NGX_XMPP_TLSREC_HDR) != 1
        || EVP_DecryptUpdate(ctx, p + NGX_XMPP_TLSREC_HDR, &n,
                             p + NGX_XMPP_TLSREC_HDR, (int) clen)
           != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG,
                               NGX_XMPP_TLSREC_TAG,
                               p + NGX_XMPP_TLSREC_HDR + clen)
           != 1
        || EVP_DecryptFinal_ex(ctx, p + NGX_XMPP_TLSREC_HDR + clen, &n)
           != 1)
    {
        /* whatever was decrypted is not authentic: it is dropped */
        OPENSSL_cleanse(p + NGX_XMPP_TLSREC_HDR, clen);
        *alert = NGX_XMPP_TLSREC_BAD_RECORD_MAC;
        return NGX_XMPP_TLSREC_FATAL;
    }

    t->rd.seq++;

    return ngx_xmpp_tlsrec_inner(t, p + NGX_XMPP_TLSREC_HDR, clen, data,
                                 dlen, alert);
}


/* 5.4: TLSInnerPlaintext = content, ContentType type, zeros[padding] */
static ngx_xmpp_tlsrec_rc_e
ngx_xmpp_tlsrec_inner(ngx_xmpp_tlsrec_t *t, unsigned char *p, size_t n,
    unsigned char **data, size_t *dlen, uint8_t *alert)
{
    uint8_t  type;

    while (n > 0 && p[n - 1] == 0) {
        n--;
    }

    /* 5.4: no non-zero octet at all is unexpected_message */
    if (n == 0) {
        *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
        return NGX_XMPP_TLSREC_FATAL;
    }

    type = p[--n];

    /* 5.1: handshake messages are not interleaved with other types */
    if (t->hs_len && type != NGX_XMPP_TLSREC_HANDSHAKE) {
        *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
        return NGX_XMPP_TLSREC_FATAL;
    }

    switch (type) {

    case NGX_XMPP_TLSREC_APPDATA:
        /* 5.4: zero-length application data is allowed */
        *data = p;
        *dlen = n;
        return NGX_XMPP_TLSREC_DATA;

    case NGX_XMPP_TLSREC_ALERT:

        /* 6: a record of type alert holds exactly one alert */
        if (n != 2) {
            *alert = NGX_XMPP_TLSREC_DECODE_ERROR;
            return NGX_XMPP_TLSREC_FATAL;
        }

        /* 6.1: close_notify ends the data; user_canceled precedes it */
        if (p[1] == NGX_XMPP_TLSREC_CLOSE_NOTIFY) {
            return NGX_XMPP_TLSREC_CLOSE;
        }

        if (p[1] == NGX_XMPP_TLSREC_USER_CANCELED) {
            return NGX_XMPP_TLSREC_CONTROL;
        }

        /* 6.2: every other alert is fatal, and none is sent back */
        t->peer_alert = p[1];
        return NGX_XMPP_TLSREC_FATAL;

    case NGX_XMPP_TLSREC_HANDSHAKE:
        return ngx_xmpp_tlsrec_handshake(t, p, n, alert);

    default:
        /* 5: change_cipher_spec (5 says: after the handshake) or unknown */
        *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
        return NGX_XMPP_TLSREC_FATAL;
    }
}


/*
 * 4.6.3: the only handshake message a client may send here (we never
 * ask for post-handshake authentication, 4.6.2) is KeyUpdate:
 * msg_type 24, length 1, request_update 0 or 1.  It may arrive in
 * fragments (5.1), which hs[] collects, but must end its record, since
 * a key change follows it.
 */
static ngx_xmpp_tlsrec_rc_e
ngx_xmpp_tlsrec_handshake(ngx_xmpp_tlsrec_t *t, const unsigned char *p,
    size_t n, uint8_t *alert)
{
    /* 5.1: no zero-length fragments of handshake messages */
    if (n == 0) {
        *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
        return NGX_XMPP_TLSREC_FATAL;
    }

    while (n--) {
        t->hs[t->hs_len++] = *p++;

        if (t->hs_len == 1 && t->hs[0] != 24) {
            *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
            return NGX_XMPP_TLSREC_FATAL;
        }

        if (t->hs_len == 4
            && (t->hs[1] != 0 || t->hs[2] != 0 || t->hs[3] != 1))
        {
            *alert = NGX_XMPP_TLSREC_DECODE_ERROR;
            return NGX_XMPP_TLSREC_FATAL;
        }

        if (t->hs_len < 5) {
            continue;
        }

        t->hs_len = 0;

        if (t->hs[4] > 1) {
            *alert = NGX_XMPP_TLSREC_ILLEGAL_PARAMETER;
            return NGX_XMPP_TLSREC_FATAL;
        }

        if (n != 0) {
            *alert = NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE;
            return NGX_XMPP_TLSREC_FATAL;
        }

        if (ngx_xmpp_tlsrec_update(&ngx_xmpp_tlsrec_suites[t->suite],
                                   &t->rd)
            != 0)
        {
            *alert = NGX_XMPP_TLSREC_INTERNAL_ERROR;
            return NGX_XMPP_TLSREC_FATAL;
        }

        /* update_requested: ours goes before our next data (4.6.3) */
        if (t->hs[4] == 1) {
            t->update_owed = 1;
        }
    }

    return NGX_XMPP_TLSREC_CONTROL;
}


/*
 * Seals one record of type "type" (5.2, no padding) into out, which
 * has room for NGX_XMPP_TLSREC_SEALED(len); in may be out + 5.
 * Returns the record's length, 0 if OpenSSL failed.
 */
size_t
ngx_xmpp_tlsrec_seal(ngx_xmpp_tlsrec_t *t, uint8_t type,
    const unsigned char *in, size_t len, unsigned char *out)
{
    int              n;
    size_t           clen;
    EVP_CIPHER_CTX  *ctx;
    unsigned char   *c, nonce[12];

    if (t->failed) {
        return 0;
    }

    clen = len + 1 + NGX_XMPP_TLSREC_TAG;
    c = out + NGX_XMPP_TLSREC_HDR;

    out[0] = NGX_XMPP_TLSREC_APPDATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (unsigned char) (clen >> 8);
    out[4] = (unsigned char) clen;

    ctx = ngx_xmpp_tlsrec_ctx[t->suite][1];
    ngx_xmpp_tlsrec_nonce(&t->wr, nonce);

    if (EVP_EncryptInit_ex2(ctx, NULL, t->wr.key, nonce, NULL) != 1
        || EVP_EncryptUpdate(ctx, NULL, &n, out, NGX_XMPP_TLSREC_HDR) != 1
        || EVP_EncryptUpdate(ctx, c, &n, in, (int) len) != 1
        || EVP_EncryptUpdate(ctx, c + len, &n, &type, 1) != 1
        || EVP_EncryptFinal_ex(ctx, c + len + 1, &n) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG,
                               NGX_XMPP_TLSREC_TAG, c + len + 1)
           != 1)
    {
        t->failed = 1;
        return 0;
    }

    t->wr.seq++;

    return NGX_XMPP_TLSREC_HDR + clen;
}


/*
 * Before each application data record: our KeyUpdate
 * (update_not_requested), sealed under the old key, when the client
 * asked for one (4.6.3) or our key has sealed NGX_XMPP_TLSREC_REKEY
 * records (5.5); then the new write key.  Writes at most
 * NGX_XMPP_TLSREC_KU_LEN bytes into out; returns them, 0 if none is due
 * or OpenSSL failed (then t->failed is set and no seal succeeds again).
 */
size_t
ngx_xmpp_tlsrec_pre_data(ngx_xmpp_tlsrec_t *t, unsigned char *out)
{
    size_t                len;
    static unsigned char  ku[5] = { 24, 0, 0, 1, 0 };

    if (!t->update_owed && t->wr.seq < NGX_XMPP_TLSREC_REKEY) {
        return 0;
    }

    len = ngx_xmpp_tlsrec_seal(t, NGX_XMPP_TLSREC_HANDSHAKE, ku, sizeof(ku),
                               out);

    if (len == 0
        || ngx_xmpp_tlsrec_update(&ngx_xmpp_tlsrec_suites[t->suite], &t->wr)
           != 0)
    {
        t->failed = 1;
        return 0;
    }

    t->update_owed = 0;

    return len;
}


/* 6: close_notify is a warning (1), every other alert fatal (2) */
size_t
ngx_xmpp_tlsrec_alert(ngx_xmpp_tlsrec_t *t, uint8_t desc, unsigned char *out)
{
    unsigned char  a[2];

    a[0] = (desc == NGX_XMPP_TLSREC_CLOSE_NOTIFY) ? 1 : 2;
    a[1] = desc;

    return ngx_xmpp_tlsrec_seal(t, NGX_XMPP_TLSREC_ALERT, a, 2, out);
}
