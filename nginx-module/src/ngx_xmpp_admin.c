
/*
 * The admin console's HTTP side: the "conclave_admin" location serves
 * the static web app (conclave_admin_root) and the JSON API under
 * <location>api/.  Every response carries the security headers, API
 * calls need a signed session cookie and the role the call is for, and
 * every state-changing call a CSRF token (issue 8 item 2).
 *
 * The session is the cookie: "1|user|roles|issued|last|nonce", signed
 * with HMAC-SHA256 under a key from conclave_admin_key_file or drawn
 * at each start (a restart then signs everyone out).  Every call
 * re-issues it with a new "last", so the idle timeout slides while the
 * absolute one does not.  Sign-out puts the nonce on a revocation list
 * in shared memory until the cookie would have expired anyway.  The
 * CSRF token is HMAC(key, "csrf|" nonce): no state, and useless to a
 * page that cannot read the API's answers (SameSite=Strict besides).
 */


#include "ngx_xmpp_admin.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>


#define NGX_XMPP_ADMIN_COOKIE       "conclave_admin"
#define NGX_XMPP_ADMIN_COOKIE_MAX   512
#define NGX_XMPP_ADMIN_CSRF_HEADER  "X-CSRF-Token"

#define NGX_XMPP_ADMIN_CSP                                                 \
    "default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; "         \
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

#define NGX_XMPP_ADMIN_ANY   (NGX_XMPP_ADMIN_ROLE_ADMIN                    \
                              |NGX_XMPP_ADMIN_ROLE_COMPLIANCE              \
                              |NGX_XMPP_ADMIN_ROLE_AUDITOR)
#define NGX_XMPP_ADMIN_READ  (NGX_XMPP_ADMIN_ROLE_COMPLIANCE               \
                              |NGX_XMPP_ADMIN_ROLE_AUDITOR)


typedef struct {
    ngx_str_t               name;
    ngx_uint_t              method;      /* NGX_HTTP_GET or _POST */
    ngx_uint_t              roles;       /* any of; 0: no session needed */
    ngx_xmpp_admin_api_pt   handler;
} ngx_xmpp_admin_api_t;


static ngx_int_t ngx_xmpp_admin_headers(ngx_http_request_t *r);
static ngx_int_t ngx_xmpp_admin_static(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf, ngx_str_t *name);
static ngx_int_t ngx_xmpp_admin_api(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf, ngx_str_t *name);
static ngx_int_t ngx_xmpp_admin_session(ngx_xmpp_admin_ctx_t *ctx);
static ngx_int_t ngx_xmpp_admin_csrf_ok(ngx_xmpp_admin_ctx_t *ctx);
static ngx_int_t ngx_xmpp_admin_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *code);


static ngx_xmpp_admin_api_t  ngx_xmpp_admin_apis[] = {
    { ngx_string("signin"), NGX_HTTP_POST, 0, ngx_xmpp_admin_signin },
    { ngx_string("signout"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_signout },
    { ngx_string("me"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_me },
    { ngx_string("search"), NGX_HTTP_GET, NGX_XMPP_ADMIN_READ,
      ngx_xmpp_admin_search },
    { ngx_string("conversation"), NGX_HTTP_GET, NGX_XMPP_ADMIN_READ,
      ngx_xmpp_admin_conversation },
    { ngx_string("signins"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_signins },
    { ngx_string("audit"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_audit_log },
    { ngx_string("sessions"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_sessions },
    { ngx_string("kick"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_kick },
    { ngx_string("status"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_status },
    /* exports, holds and retention: compliance officers only */
    { ngx_string("exports"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_export },
    { ngx_string("exports"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_exports },
    { ngx_string("download"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_download },
    { ngx_string("holds"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_hold },
    { ngx_string("holds"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_holds },
    { ngx_string("retention"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_policy },
    { ngx_string("retention"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_holds },
    { ngx_null_string, 0, 0, NULL }
};


/* by role bit number: NGX_XMPP_ROLE_ADMIN is bit 1 */
ngx_str_t  ngx_xmpp_admin_role_names[NGX_XMPP_ADMIN_ROLES] = {
    ngx_null_string,
    ngx_string("admin"),
    ngx_string("compliance"),
    ngx_string("auditor")
};


/* ------------------------------------------------------------------ */
/* configuration */

void
ngx_xmpp_admin_conf_create(ngx_xmpp_conf_t *xcf)
{
    xcf->admin_idle_timeout = NGX_CONF_UNSET_MSEC;
    xcf->admin_session_timeout = NGX_CONF_UNSET_MSEC;
    xcf->admin_max_failures = NGX_CONF_UNSET_UINT;
    xcf->admin_lockout = NGX_CONF_UNSET_MSEC;
    xcf->admin_export_max = NGX_CONF_UNSET_UINT;
    xcf->admin_export_keep = NGX_CONF_UNSET;
    xcf->admin_forged_summary = NGX_CONF_UNSET_MSEC;
}


/* conclave_admin_role_group admin|compliance|auditor <group DN> */
char *
ngx_xmpp_admin_conf_role(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_xmpp_conf_t *xcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        if (value[1].len == ngx_xmpp_admin_role_names[i].len
            && ngx_strncmp(value[1].data, ngx_xmpp_admin_role_names[i].data,
                           value[1].len) == 0)
        {
            break;
        }
    }

    if (i == NGX_XMPP_ADMIN_ROLES) {
        return "takes a role of \"admin\", \"compliance\" or \"auditor\"";
    }

    if (xcf->admin_role_group[i].len) {
        return "is duplicate";
    }

    if (value[2].len == 0) {
        return "needs a group DN";
    }

    xcf->admin_role_group[i] = value[2];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_xmpp_admin_key(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    u_char      buf[1024];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_file_t  file;

    if (xcf->admin_key_file.len == 0) {
        /* per start: a restart or reload signs everyone out */
        return RAND_bytes(xcf->admin_key, sizeof(xcf->admin_key)) == 1
               ? NGX_OK : NGX_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &xcf->admin_key_file, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(xcf->admin_key_file.data, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open \"%V\"", &xcf->admin_key_file);
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = xcf->admin_key_file;
    file.log = cf->log;

    n = ngx_read_file(&file, buf, sizeof(buf), 0);
    (void) ngx_close_file(fd);

    if (n < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must hold at least 32 bytes",
                           &xcf->admin_key_file);
        return NGX_ERROR;
    }

    /* any length of secret becomes a 32-byte key */
    (void) HMAC(EVP_sha256(), "conclave-admin", 14, buf, n, xcf->admin_key,
                NULL);
    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_OK;
}


char *
ngx_xmpp_admin_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    ngx_uint_t  i, any;

    ngx_conf_init_msec_value(xcf->admin_idle_timeout, 15 * 60 * 1000);
    ngx_conf_init_msec_value(xcf->admin_session_timeout, 8 * 3600 * 1000);
    ngx_conf_init_uint_value(xcf->admin_max_failures, 5);
    ngx_conf_init_msec_value(xcf->admin_lockout, 15 * 60 * 1000);
    ngx_conf_init_uint_value(xcf->admin_export_max, 2);
    ngx_conf_init_value(xcf->admin_export_keep, 7 * 86400);
    ngx_conf_init_msec_value(xcf->admin_forged_summary, 60 * 1000);

    any = 0;

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        any |= xcf->admin_role_group[i].len;
    }

    if (!any || xcf->domain.len == 0) {
        return NGX_CONF_OK;
    }

    if (xcf->admin_idle_timeout < 1000
        || xcf->admin_session_timeout < xcf->admin_idle_timeout
        || xcf->admin_max_failures == 0
        || xcf->admin_forged_summary < 1000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_admin_session_timeout\" must be at "
                           "least \"conclave_admin_idle_timeout\" (1s or "
                           "more), \"conclave_admin_max_failures\" positive, "
                           "\"conclave_admin_forged_summary\" 1s or more");
        return NGX_CONF_ERROR;
    }

    if (xcf->admin_root.len
        && ngx_conf_full_name(cf->cycle, &xcf->admin_root, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_xmpp_admin_key(cf, xcf) != NGX_OK
        || ngx_xmpp_admin_export_conf(cf, xcf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_xmpp_admin_zone_add(cf, xcf);
}


/* ------------------------------------------------------------------ */
/* the location's handler */

ngx_int_t
ngx_xmpp_admin_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    ngx_str_t                  rest;
    ngx_http_core_loc_conf_t  *clcf;

    if (ngx_xmpp_admin_headers(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (xcf->admin_zone == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "xmpp: conclave_admin without any "
                      "conclave_admin_role_group");
        return NGX_HTTP_NOT_FOUND;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->uri.len < clcf->name.len
        || ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) != 0)
    {
        return NGX_HTTP_NOT_FOUND;
    }

    rest.data = r->uri.data + clcf->name.len;
    rest.len = r->uri.len - clcf->name.len;

    if (rest.len > 4 && ngx_strncmp(rest.data, "api/", 4) == 0) {
        rest.data += 4;
        rest.len -= 4;
        return ngx_xmpp_admin_api(r, xcf, &rest);
    }

    return ngx_xmpp_admin_static(r, xcf, &rest);
}


static ngx_int_t
ngx_xmpp_admin_set_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/* on every response of the location, errors included */
static ngx_int_t
ngx_xmpp_admin_headers(ngx_http_request_t *r)
{
    static const char  *headers[] = {
        "Content-Security-Policy", NGX_XMPP_ADMIN_CSP,
        "X-Content-Type-Options", "nosniff",
        "X-Frame-Options", "DENY",
        "Referrer-Policy", "no-referrer",
        "Cross-Origin-Opener-Policy", "same-origin",
        "Cross-Origin-Resource-Policy", "same-origin",
        "Permissions-Policy", "camera=(), microphone=(), geolocation=()",
        "Cache-Control", "no-store",
        NULL
    };

    ngx_uint_t  i;

    for (i = 0; headers[i]; i += 2) {
        if (ngx_xmpp_admin_set_header(r, headers[i], headers[i + 1])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        return ngx_xmpp_admin_set_header(r, "Strict-Transport-Security",
                                         "max-age=31536000");
    }
#endif

    return NGX_OK;
}


/*
 * The web app: a few flat files.  Names are checked against a strict
 * alphabet, so no "..", no "/" and no hidden file is ever opened.
 */
static ngx_int_t
ngx_xmpp_admin_static(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf,
    ngx_str_t *name)
{
    u_char      *path, *p, *dot;
    off_t        size;
    ngx_fd_t     fd;
    ngx_int_t    rc;
    ngx_uint_t   i;

    static ngx_str_t  types[] = {
        ngx_string(".html"), ngx_string("text/html; charset=utf-8"),
        ngx_string(".js"), ngx_string("application/javascript"),
        ngx_string(".css"), ngx_string("text/css"),
        ngx_string(".svg"), ngx_string("image/svg+xml"),
        ngx_string(".png"), ngx_string("image/png"),
        ngx_null_string, ngx_null_string
    };

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (name->len == 0) {
        ngx_str_set(name, "index.html");
    }

    if (xcf->admin_root.len == 0 || name->len > 64 || name->data[0] == '.') {
        return NGX_HTTP_NOT_FOUND;
    }

    dot = NULL;

    for (i = 0; i < name->len; i++) {
        p = &name->data[i];

        if (*p == '.') {
            dot = p;

        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
                     || *p == '-' || *p == '_'))
        {
            return NGX_HTTP_NOT_FOUND;
        }
    }

    if (dot == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    for (i = 0; types[i].len; i += 2) {
        if ((size_t) (name->data + name->len - dot) == types[i].len
            && ngx_strncmp(dot, types[i].data, types[i].len) == 0)
        {
            break;
        }
    }

    if (types[i].len == 0) {
        return NGX_HTTP_NOT_FOUND;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    path = ngx_pnalloc(r->pool, xcf->admin_root.len + name->len + 2);
    if (path == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(path, xcf->admin_root.data, xcf->admin_root.len);
    *p++ = '/';
    *ngx_cpymem(p, name->data, name->len) = '\0';

    rc = ngx_xmpp_admin_open(r, path, &fd, &size);

    if (rc != NGX_OK) {
        return rc == NGX_ERROR ? NGX_HTTP_INTERNAL_SERVER_ERROR
                               : NGX_HTTP_NOT_FOUND;
    }

    return ngx_xmpp_admin_send_file(r, fd, path, size, &types[i + 1]);
}


/* ------------------------------------------------------------------ */
/* the API: session, role, CSRF, then the call */

/*
 * A POST refused before its handler reads the body: the body is
 * discarded, or on a keep-alive connection its bytes would be taken for
 * the next request.
 */
static ngx_int_t
ngx_xmpp_admin_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *code)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_xmpp_admin_error(r, status, code);
}


static ngx_int_t
ngx_xmpp_admin_api(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf,
    ngx_str_t *name)
{
    ngx_int_t              rc;
    ngx_uint_t             known;
    ngx_xmpp_admin_api_t  *api;
    ngx_xmpp_admin_ctx_t  *ctx;

    known = 0;

    /* a name may have a GET and a POST entry */
    for (api = ngx_xmpp_admin_apis; api->name.len; api++) {
        if (api->name.len == name->len
            && ngx_strncmp(api->name.data, name->data, name->len) == 0)
        {
            known = 1;

            if (api->method == r->method) {
                break;
            }
        }
    }

    if (!known) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_NOT_FOUND, "no-such-call");
    }

    if (api->name.len == 0) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_NOT_ALLOWED,
                                     "method-not-allowed");
    }

    if (r->method == NGX_HTTP_GET) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_xmpp_admin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->xcf = xcf;
    ngx_http_set_ctx(r, ctx, ngx_http_conclave_module);

    if (xcf->audit_zone == NULL) {
        /* the console's actions must be recorded, or not happen */
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "audit-not-configured");
    }

    if (api->roles == 0) {
        return api->handler(ctx);
    }

    rc = ngx_xmpp_admin_session(ctx);

    if (rc == NGX_DECLINED) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_UNAUTHORIZED, ctx->refused);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if ((ctx->sess.roles & api->roles) == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: \"%s\" may not call \"%V\"",
                      ctx->sess.user, name);
        (void) ngx_xmpp_admin_audit(ctx, (char *) api->name.data, 0,
                                    "forbidden", NULL);
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_FORBIDDEN, "forbidden");
    }

    if (api->method == NGX_HTTP_POST && ngx_xmpp_admin_csrf_ok(ctx) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: \"%V\" without a valid CSRF token "
                      "from \"%s\"", name, ctx->sess.user);
        (void) ngx_xmpp_admin_audit(ctx, (char *) api->name.data, 0, "csrf",
                                    NULL);
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_FORBIDDEN, "csrf");
    }

    return api->handler(ctx);
}


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
    ngx_table_elt_t           *h;
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

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Set-Cookie");
    h->value = dst;

    return NGX_OK;
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


static ngx_int_t
ngx_xmpp_admin_csrf_ok(ngx_xmpp_admin_ctx_t *ctx)
{
    u_char            want[64];
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_xmpp_admin_csrf(ctx, want);

    part = &ctx->request->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_DECLINED;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof(NGX_XMPP_ADMIN_CSRF_HEADER) - 1
            && ngx_strncasecmp(h[i].key.data,
                               (u_char *) NGX_XMPP_ADMIN_CSRF_HEADER,
                               h[i].key.len) == 0)
        {
            return h[i].value.len == 43
                   && CRYPTO_memcmp(h[i].value.data, want, 43) == 0
                   ? NGX_OK : NGX_DECLINED;
        }
    }
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
static ngx_int_t
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


/* ------------------------------------------------------------------ */
/* helpers for the API handlers */

/*
 * A file for a GET answer: opened without blocking on a FIFO, closed by
 * the request pool's cleanup.  NGX_DECLINED: it could not be opened
 * (ngx_errno says why); NGX_ABORT: not a regular file; NGX_ERROR: no
 * memory.
 */
ngx_int_t
ngx_xmpp_admin_open(ngx_http_request_t *r, u_char *path, ngx_fd_t *fd,
    off_t *size)
{
    ngx_file_info_t           fi;
    ngx_pool_cleanup_t       *cln;
    ngx_pool_cleanup_file_t  *clnf;

    *fd = ngx_open_file(path, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                        NGX_FILE_OPEN, 0);
    if (*fd == NGX_INVALID_FILE) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_pool_cleanup_file_t));
    if (cln == NULL) {
        (void) ngx_close_file(*fd);
        return NGX_ERROR;
    }

    cln->handler = ngx_pool_cleanup_file;
    clnf = cln->data;
    clnf->fd = *fd;
    clnf->name = path;
    clnf->log = r->connection->log;

    if (ngx_fd_info(*fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
        return NGX_ABORT;
    }

    *size = ngx_file_size(&fi);

    return NGX_OK;
}


/* a file opened by ngx_xmpp_admin_open() as the whole 200 answer */
ngx_int_t
ngx_xmpp_admin_send_file(ngx_http_request_t *r, ngx_fd_t fd, u_char *path,
    off_t size, ngx_str_t *type)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->file = ngx_pcalloc(r->pool, sizeof(ngx_file_t));
    if (b->file == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = size;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->file_pos = 0;
    b->file_last = size;
    b->in_file = size ? 1 : 0;
    b->last_buf = 1;
    b->last_in_chain = 1;
    b->file->fd = fd;
    b->file->name.data = path;
    b->file->name.len = ngx_strlen(path);
    b->file->log = r->connection->log;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* ngx_xmpp_admin_work_t (ngx_xmpp_admin.h): task and context, zeroed */
ngx_thread_task_t *
ngx_xmpp_admin_work_alloc(size_t size, ngx_log_t *log)
{
    ngx_thread_task_t  *task;

    task = ngx_calloc(sizeof(ngx_thread_task_t) + size, log);
    if (task == NULL) {
        return NULL;
    }

    task->ctx = task + 1;

    return task;
}


static void
ngx_xmpp_admin_work_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_xmpp_admin_work_t  *w;

    w = task->ctx;
    r = w->request;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (r) {
        c = r->connection;
        ngx_http_finalize_request(r, w->finish(r, w));
        ngx_http_run_posted_requests(c);
    }

    if (w->end) {
        w->end(w, r == NULL, ev->log);
    }

    ngx_free(task);
}


static void
ngx_xmpp_admin_work_expire(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_xmpp_admin_work_t  *w;

    w = task->ctx;
    r = w->request;
    w->request = NULL;
    c = r->connection;

    ngx_http_finalize_request(r, w->expire(r, w));
    ngx_http_run_posted_requests(c);

    /* the completion event frees the task */
}


/* NGX_ERROR: not posted, the caller frees the task */
ngx_int_t
ngx_xmpp_admin_work_post(ngx_http_request_t *r, ngx_thread_pool_t *tp,
    ngx_thread_task_t *task, void (*handler)(void *data, ngx_log_t *log),
    ngx_msec_t timeout)
{
    ngx_xmpp_admin_work_t  *w;

    w = task->ctx;
    w->request = r;

    task->handler = handler;
    task->event.handler = ngx_xmpp_admin_work_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (tp == NULL || ngx_thread_task_post(tp, task) != NGX_OK) {
        return NGX_ERROR;
    }

    w->timer.handler = ngx_xmpp_admin_work_expire;
    w->timer.data = task;
    w->timer.log = r->connection->log;
    ngx_add_timer(&w->timer, timeout);

    return NGX_OK;
}


/*
 * A bare JID from a JSON string, lower-cased into out (size bytes): a
 * localpart alone gets "@<conclave_domain>"; a room (room != 0) must be
 * a full "room@service" JID.  A strict alphabet: nothing here ever
 * reaches SQL or a path unescaped, but a narrow one is also what a
 * directory login and a MUC room name are.
 */
ngx_int_t
ngx_xmpp_admin_json_jid(ngx_xmpp_conf_t *xcf, json_t *v, char *out,
    size_t size, ngx_uint_t room)
{
    u_char       c;
    size_t       len, i, at;
    const char  *s;

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s = json_string_value(v);
    len = json_string_length(v);
    at = 0;

    if (len == 0 || len + xcf->domain.len + 2 > size || len > 200) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        c = ngx_tolower((u_char) s[i]);

        if (c == '@' && at == 0 && i > 0 && i < len - 1) {
            at = i;

        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                     || c == '.' || c == '-' || c == '_'))
        {
            return NGX_ERROR;
        }

        out[i] = c;
    }

    out[len] = '\0';

    if (at == 0) {
        /* a room is always a full JID: its domain is the MUC service */
        if (room) {
            return NGX_ERROR;
        }

        ngx_snprintf((u_char *) out + len, size - len, "@%V%Z", &xcf->domain);
    }

    return NGX_OK;
}


/* Unix milliseconds from 1970 to 9999 as microseconds, or absent: 0 */
ngx_int_t
ngx_xmpp_admin_json_ms(json_t *v, int64_t *us)
{
    json_int_t  ms;

    *us = 0;

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    ms = json_integer_value(v);

    /* 9999-12-31: the microseconds fit an int64_t with room to spare */
    if (ms <= 0 || ms > 253402300799999LL) {
        return NGX_ERROR;
    }

    *us = (int64_t) ms * 1000;

    return NGX_OK;
}



/* doc is stolen */
ngx_int_t
ngx_xmpp_admin_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc)
{
    char         *text;
    u_char       *p;
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* ASCII only: nothing in the answer depends on the charset */
    text = json_dumps(doc, JSON_COMPACT|JSON_ENSURE_ASCII);
    json_decref(doc);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, 6 * len + 1);
    if (b == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * '<', '>' and '&' only occur inside JSON strings: as \u escapes
     * the answer holds no markup even for a client that sniffs
     */
    for (p = (u_char *) text; *p; p++) {
        if (*p == '<' || *p == '>' || *p == '&') {
            b->last = ngx_sprintf(b->last, "\\u%04xi", (ngx_int_t) *p);

        } else {
            *b->last++ = *p;
        }
    }

    *b->last++ = '\n';
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    free(text);

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_xmpp_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code)
{
    json_t  *doc;

    doc = json_pack("{ss}", "error", code);

    if (status == NGX_HTTP_NOT_ALLOWED) {
        (void) ngx_xmpp_admin_set_header(r, "Allow", "GET, POST");
    }

    return ngx_xmpp_admin_send_json(r, status, doc);
}


static void ngx_xmpp_admin_body(ngx_http_request_t *r);


/*
 * A JSON object body of at most NGX_XMPP_ADMIN_BODY_MAX bytes, read
 * without blocking; handler() gets it (or NULL) and answers.
 */
ngx_int_t
ngx_xmpp_admin_read_json(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_admin_body_pt handler)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (r->headers_in.content_length_n > NGX_XMPP_ADMIN_BODY_MAX) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "body-too-large");
    }

    ctx->body_handler = handler;
    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_xmpp_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_xmpp_admin_body(ngx_http_request_t *r)
{
    u_char                 buf[NGX_XMPP_ADMIN_BODY_MAX], *p;
    size_t                 n;
    json_t                *body;
    ngx_int_t              rc;
    ngx_chain_t           *cl;
    ngx_xmpp_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_conclave_module);

    p = buf;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        n = cl->buf->last - cl->buf->pos;

        if (cl->buf->in_file || n > (size_t) (buf + sizeof(buf) - p)) {
            ngx_http_finalize_request(r, ngx_xmpp_admin_error(r,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "body-too-large"));
            return;
        }

        if (n) {
            p = ngx_cpymem(p, cl->buf->pos, n);
        }
    }

    body = json_loadb((char *) buf, p - buf, JSON_REJECT_DUPLICATES, NULL);

    /* a sign-in's password was in there */
    ngx_explicit_memzero(buf, sizeof(buf));

    if (body && !json_is_object(body)) {
        json_decref(body);
        body = NULL;
    }

    rc = ctx->body_handler(ctx, body);

    if (body) {
        json_decref(body);
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * A query argument, URL-decoded into the request's pool; NGX_DECLINED
 * when absent or empty, NGX_ERROR when longer than the limit or not
 * UTF-8 without control characters.
 */
ngx_int_t
ngx_xmpp_admin_arg(ngx_http_request_t *r, const char *name, ngx_str_t *out)
{
    u_char     *src, *dst, *p, *end;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        return NGX_DECLINED;
    }

    if (raw.len > 3 * NGX_XMPP_ADMIN_ARG_MAX) {
        return NGX_ERROR;
    }

    dst = ngx_pnalloc(r->pool, raw.len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    /* '+' is a space in a query string (HTML form encoding) */
    for (p = raw.data; p < raw.data + raw.len; p++) {
        if (*p == '+') {
            *p = ' ';
        }
    }

    src = raw.data;
    out->data = dst;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    out->len = dst - out->data;
    *dst = '\0';

    if (out->len == 0) {
        return NGX_DECLINED;
    }

    if (out->len > NGX_XMPP_ADMIN_ARG_MAX) {
        return NGX_ERROR;
    }

    p = out->data;
    end = p + out->len;

    while (p < end) {
        if (*p < 0x20 || *p == 0x7f) {
            return NGX_ERROR;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        if (ngx_utf8_decode(&p, end - p) > 0x10ffff) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a console action into the audit chain; params is stolen */
ngx_int_t
ngx_xmpp_admin_audit(ngx_xmpp_admin_ctx_t *ctx, const char *action,
    ngx_uint_t ok, const char *error, json_t *params)
{
    u_char              user[NGX_XMPP_ADMIN_USER_MAX + 256], sid[17], *ip;
    ngx_connection_t   *c;

    c = ctx->request->connection;

    if (ctx->sess.user_len) {
        ngx_snprintf(user, sizeof(user) - 1, "%*s@%V%Z", ctx->sess.user_len,
                     ctx->sess.user, &ctx->xcf->domain);
        user[sizeof(user) - 1] = '\0';
    }

    ngx_hex_dump(sid, ctx->sess.nonce, 8);
    sid[16] = '\0';

    ip = ngx_pnalloc(ctx->request->pool, c->addr_text.len + 1);
    if (ip == NULL) {
        if (params) {
            json_decref(params);
        }
        return NGX_ERROR;
    }

    *ngx_cpymem(ip, c->addr_text.data, c->addr_text.len) = '\0';

    return ngx_xmpp_audit_admin(ctx->xcf, c->log,
                                ctx->sess.user_len ? (char *) user : NULL,
                                (char *) ip,
                                ctx->sess.user_len ? (char *) sid : NULL,
                                action, ok, error, params);
}
