
/*
 * Console sessions (issue 8 item 2).  The session is the cookie:
 * "2|user|roles|issued|last|nonce", signed with HMAC-SHA256 under a key
 * from conclave_admin_key_file or drawn at each start (a restart then
 * signs everyone out).  Every call re-issues it with a new "last", so
 * the idle timeout slides while the absolute one does not.  Sign-out
 * puts the nonce on a revocation list in shared memory until the cookie
 * would have expired anyway (ngx_xmpp_admin_auth.c).  The CSRF token is
 * HMAC(key, "csrf|" nonce): no state, and useless to a page that cannot
 * read the API's answers (SameSite=Strict besides).
 */


#include "ngx_xmpp_admin.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>


#define NGX_XMPP_ADMIN_COOKIE       "conclave_admin"
#define NGX_XMPP_ADMIN_COOKIE_MAX   512
#define NGX_XMPP_ADMIN_CSRF_HEADER  "X-CSRF-Token"


static void
ngx_xmpp_admin_hmac(ngx_xmpp_conf_t *xcf, const char *prefix, u_char *data,
    size_t len, u_char *mac)
{
    HMAC_CTX  *h;

    /* one-shot HMAC() cannot take a prefix without a copy */
    h = HMAC_CTX_new();

    if (h == NULL
        || HMAC_Init_ex(h, xcf->admin_key, sizeof(xcf->admin_key),
                        EVP_sha256(), NULL) != 1
        || HMAC_Update(h, (u_char *) prefix, ngx_strlen(prefix)) != 1
        || HMAC_Update(h, data, len) != 1
        || HMAC_Final(h, mac, NULL) != 1)
    {
        /* a key nobody knows: every check against it fails */
        (void) RAND_bytes(mac, 32);
    }

    HMAC_CTX_free(h);
}


/* the Set-Cookie value for ctx->sess, or the clearing one */
ngx_int_t
ngx_xmpp_admin_cookie(ngx_xmpp_admin_ctx_t *ctx, ngx_uint_t clear)
{
    u_char                    *p, *payload, mac[32];
    size_t                     len;
    time_t                     left;
    ngx_str_t                  src, dst, m;
    ngx_http_request_t        *r;
    ngx_xmpp_admin_sess_t     *s;
    ngx_http_core_loc_conf_t  *clcf;

    r = ctx->request;
    s = &ctx->sess;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    payload = ngx_pnalloc(r->pool, NGX_XMPP_ADMIN_COOKIE_MAX);
    if (payload == NULL) {
        return NGX_ERROR;
    }

    p = ngx_snprintf(payload, NGX_XMPP_ADMIN_COOKIE_MAX / 2,
                     "2|%*s|%ui|%T|%T|", s->user_len, s->user, s->roles,
                     s->issued, s->last);
    p = ngx_hex_dump(p, s->nonce, NGX_XMPP_ADMIN_NONCE_LEN);
    len = p - payload;

    ngx_xmpp_admin_hmac(ctx->xcf, "session|", payload, len, mac);

    left = (time_t) (ctx->xcf->admin_session_timeout / 1000)
           - (ngx_time() - s->issued);

    dst.data = ngx_pnalloc(r->pool, 2 * NGX_XMPP_ADMIN_COOKIE_MAX
                                    + clcf->name.len);
    if (dst.data == NULL) {
        return NGX_ERROR;
    }

    if (clear) {
        p = ngx_sprintf(dst.data, NGX_XMPP_ADMIN_COOKIE "=; Max-Age=0");

    } else {
        p = ngx_cpymem(dst.data, NGX_XMPP_ADMIN_COOKIE "=",
                       sizeof(NGX_XMPP_ADMIN_COOKIE));
        src.data = payload;
        src.len = len;
        m.data = p;
        ngx_encode_base64url(&m, &src);
        p += m.len;
        *p++ = '.';
        src.data = mac;
        src.len = sizeof(mac);
        m.data = p;
        ngx_encode_base64url(&m, &src);
        p += m.len;
        p = ngx_sprintf(p, "; Max-Age=%T", left > 0 ? left : 0);
    }

    p = ngx_sprintf(p, "; Path=%V; HttpOnly; Secure; SameSite=Strict",
                    &clcf->name);
    dst.len = p - dst.data;

    return ngx_xmpp_http_header_n(r, "Set-Cookie", dst.data, dst.len);
}


/* Set-Cookie lines queued so far stop counting (sign-out) */
void
ngx_xmpp_admin_drop_cookies(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    for (part = &r->headers_out.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len == sizeof("Set-Cookie") - 1
                && ngx_strncasecmp(h[i].key.data, (u_char *) "Set-Cookie",
                                   h[i].key.len) == 0)
            {
                h[i].hash = 0;
            }
        }
    }
}


/* the CSRF token of a session: base64url of 32 bytes, 43 characters */
void
ngx_xmpp_admin_csrf(ngx_xmpp_admin_ctx_t *ctx, u_char *out)
{
    u_char     mac[32];
    ngx_str_t  src, dst;

    ngx_xmpp_admin_hmac(ctx->xcf, "csrf|", ctx->sess.nonce,
                        NGX_XMPP_ADMIN_NONCE_LEN, mac);

    src.data = mac;
    src.len = sizeof(mac);
    dst.data = out;
    ngx_encode_base64url(&dst, &src);
    out[dst.len] = '\0';
}


ngx_int_t
ngx_xmpp_admin_csrf_ok(ngx_xmpp_admin_ctx_t *ctx)
{
    u_char            want[64];
    ngx_table_elt_t  *h;

    ngx_xmpp_admin_csrf(ctx, want);

    h = ngx_xmpp_http_find(ctx->request, NGX_XMPP_ADMIN_CSRF_HEADER);

    return h != NULL && h->value.len == 43
           && CRYPTO_memcmp(h->value.data, want, 43) == 0
           ? NGX_OK : NGX_DECLINED;
}


/*
 * "2|user|roles|issued|last|nonce(hex)" into s; NGX_ERROR: malformed.
 * Version 1 numbered the roles differently: such a cookie is refused.
 */
static ngx_int_t
ngx_xmpp_admin_parse(u_char *p, size_t len, ngx_xmpp_admin_sess_t *s)
{
    u_char     *end, *f[6];
    ngx_int_t   n, roles;
    ngx_uint_t  i;

    end = p + len;
    f[0] = p;

    for (i = 1; i < 6; i++) {
        p = ngx_strlchr(p, end, '|');
        if (p == NULL) {
            return NGX_ERROR;
        }
        f[i] = ++p;
    }

    if (f[1] - f[0] != 2 || f[0][0] != '2'
        || f[2] - f[1] - 1 > NGX_XMPP_ADMIN_USER_MAX
        || end - f[5] != 2 * NGX_XMPP_ADMIN_NONCE_LEN)
    {
        return NGX_ERROR;
    }

    s->user_len = f[2] - f[1] - 1;
    ngx_memcpy(s->user, f[1], s->user_len);
    s->user[s->user_len] = '\0';

    roles = ngx_atoi(f[2], f[3] - f[2] - 1);
    s->issued = ngx_atotm(f[3], f[4] - f[3] - 1);
    s->last = ngx_atotm(f[4], f[5] - f[4] - 1);

    if (roles <= 0 || s->issued == NGX_ERROR || s->last == NGX_ERROR) {
        return NGX_ERROR;
    }

    s->roles = roles;

    for (i = 0; i < NGX_XMPP_ADMIN_NONCE_LEN; i++) {
        n = ngx_hextoi(f[5] + 2 * i, 2);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }
        s->nonce[i] = (u_char) n;
    }

    return NGX_OK;
}


/*
 * The session from the cookie: signature, format, timeouts, sign-out.
 * A forged, malformed or expired cookie is refused and recorded:
 * NGX_DECLINED with the reason in ctx->refused.
 */
ngx_int_t
ngx_xmpp_admin_session(ngx_xmpp_admin_ctx_t *ctx)
{
    u_char               *dot, mac[32], buf[NGX_XMPP_ADMIN_COOKIE_MAX];
    time_t                now;
    ngx_str_t             name, value, src, dst;
    const char           *why;
    ngx_http_request_t   *r;

    r = ctx->request;

    ngx_str_set(&name, NGX_XMPP_ADMIN_COOKIE);

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies, &name,
                                          &value)
        == NGX_DECLINED
        || value.len == 0)
    {
        ctx->refused = "not-signed-in";
        return NGX_DECLINED;
    }

    why = "forged";

    dot = ngx_strlchr(value.data, value.data + value.len, '.');

    if (dot == NULL || value.len > NGX_XMPP_ADMIN_COOKIE_MAX
        || (size_t) (value.data + value.len - dot - 1)
           != ngx_base64_encoded_length(32) - 1)
    {
        goto refused;
    }

    src.data = value.data;
    src.len = dot - value.data;
    dst.data = buf;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        goto refused;
    }

    ngx_xmpp_admin_hmac(ctx->xcf, "session|", buf, dst.len, mac);

    src.data = dot + 1;
    src.len = value.data + value.len - dot - 1;
    dst.data = buf + dst.len;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK || dst.len != 32
        || CRYPTO_memcmp(dst.data, mac, 32) != 0)
    {
        goto refused;
    }

    /* signed by us: the payload can be trusted to be ours */
    if (ngx_xmpp_admin_parse(buf, dst.data - buf, &ctx->sess) != NGX_OK) {
        goto refused;
    }

    now = ngx_time();
    why = "expired";

    if (now - ctx->sess.issued
            > (time_t) (ctx->xcf->admin_session_timeout / 1000)
        || now - ctx->sess.last
            > (time_t) (ctx->xcf->admin_idle_timeout / 1000))
    {
        goto refused;
    }

    why = "signed-out";

    if (ngx_xmpp_admin_revoked(ctx->xcf, ctx->sess.nonce)) {
        goto refused;
    }

    ctx->signed_in = 1;
    ctx->sess.last = now;

    /* sliding idle timeout: the answer carries the renewed cookie */
    if (ngx_xmpp_admin_cookie(ctx, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;

refused:

    if (why[0] == 'f') {
        /* anyone can forge: logged, counted, summarised in the chain */
        ngx_memzero(&ctx->sess, sizeof(ngx_xmpp_admin_sess_t));
        ngx_xmpp_admin_forged(ctx);

    } else {
        /* signed by us: only a holder of a real cookie can replay it */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: %s session cookie of \"%s\" refused",
                      why, ctx->sess.user);
        (void) ngx_xmpp_admin_audit(ctx, "session", 0, why, NULL);
    }

    /* the browser forgets it */
    (void) ngx_xmpp_admin_cookie(ctx, 1);

    ctx->refused = why;

    return NGX_DECLINED;
}


/* who am I: user, roles and the CSRF token for later calls */
ngx_int_t
ngx_xmpp_admin_me(ngx_xmpp_admin_ctx_t *ctx)
{
    u_char      csrf[64];
    json_t     *doc, *roles;
    ngx_uint_t  i;

    ngx_xmpp_admin_csrf(ctx, csrf);

    doc = json_object();
    roles = json_array();

    if (doc == NULL || roles == NULL) {
        json_decref(doc);
        json_decref(roles);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        if (ctx->sess.roles & ((ngx_uint_t) 1 << i)) {
            json_array_append_new(roles, json_string((char *)
                                  ngx_xmpp_admin_role_names[i].data));
        }
    }

    json_object_set_new(doc, "user", json_stringn((char *) ctx->sess.user,
                                                  ctx->sess.user_len));
    json_object_set_new(doc, "domain",
                        json_stringn((char *) ctx->xcf->domain.data,
                                     ctx->xcf->domain.len));
    json_object_set_new(doc, "roles", roles);
    json_object_set_new(doc, "csrf", json_string((char *) csrf));
    json_object_set_new(doc, "idle_timeout",
                        json_integer(ctx->xcf->admin_idle_timeout / 1000));

    return ngx_xmpp_admin_send_json(ctx->request, NGX_HTTP_OK, doc);
}
