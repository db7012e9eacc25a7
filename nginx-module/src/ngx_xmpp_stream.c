
/*
 * Stream negotiation (RFC 6120 sections 4-7): the state machine that
 * takes each top-level element from the parser.
 *
 *   WAIT_OPEN -> (features) -> WAIT_AUTH -> AUTH_PENDING -> (success,
 *   stream restart) WAIT_OPEN -> WAIT_BIND -> SESSION -> CLOSING
 *
 * Any stanza before SESSION is <not-authorized/> (RFC 6120 4.9.3.12).
 */


#include "ngx_xmpp.h"


static void ngx_xmpp_stream_open(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
static void ngx_xmpp_stream_sasl(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
static void ngx_xmpp_stream_starttls(ngx_xmpp_session_t *s);
static void ngx_xmpp_stream_sasl_plain(ngx_xmpp_session_t *s,
    ngx_xmpp_node_t *n);
static const char *ngx_xmpp_stream_reason(ngx_xmpp_session_t *s,
    const char *reason);
static ngx_int_t ngx_xmpp_stream_directory_user(ngx_xmpp_session_t *s,
    cdir_auth_result_t *res);
static void ngx_xmpp_stream_sasl_failure(ngx_xmpp_session_t *s,
    const char *condition);
static void ngx_xmpp_stream_sasl_throttled(ngx_xmpp_session_t *s,
    time_t left, const char *what);
static void ngx_xmpp_stream_sasl_send(ngx_xmpp_session_t *s,
    const char *condition, u_char *text, size_t len);
static void ngx_xmpp_stream_bind(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
static void ngx_xmpp_stream_stanza(ngx_xmpp_session_t *s,
    ngx_xmpp_node_t *n);
static ngx_int_t ngx_xmpp_stream_is(ngx_xmpp_node_t *n, const char *name,
    const char *ns);


static ngx_int_t
ngx_xmpp_stream_is(ngx_xmpp_node_t *n, const char *name, const char *ns)
{
    return n->name.len == ngx_strlen(name)
           && ngx_strncmp(n->name.data, name, n->name.len) == 0
           && n->ns.len == ngx_strlen(ns)
           && ngx_strncmp(n->ns.data, ns, n->ns.len) == 0;
}


static ngx_int_t
ngx_xmpp_stream_is_stanza(ngx_xmpp_node_t *n)
{
    return ngx_xmpp_stream_is(n, "message", NGX_XMPP_NS_CLIENT)
           || ngx_xmpp_stream_is(n, "presence", NGX_XMPP_NS_CLIENT)
           || ngx_xmpp_stream_is(n, "iq", NGX_XMPP_NS_CLIENT);
}


static ngx_uint_t
ngx_xmpp_stream_is_sm(ngx_xmpp_node_t *n)
{
    return n->ns.len == sizeof("urn:xmpp:sm:3") - 1
           && ngx_strncmp(n->ns.data, "urn:xmpp:sm:3", n->ns.len) == 0;
}


static ngx_uint_t
ngx_xmpp_stream_is_csi(ngx_xmpp_node_t *n)
{
    return n->ns.len == sizeof(NGX_XMPP_NS_CSI) - 1
           && ngx_strncmp(n->ns.data, NGX_XMPP_NS_CSI, n->ns.len) == 0;
}


void
ngx_xmpp_stream_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    if (n == NULL
        || ngx_xmpp_stream_is(n, "close", NGX_XMPP_NS_FRAMING))
    {
        /* RFC 7395 section 3.6 / RFC 6120 section 4.4: the stream ends */
        if (s->state == NGX_XMPP_ST_CLOSING) {
            ngx_xmpp_session_finalize(s);
            return;
        }

        if (s->end_reason == NULL) {
            s->end_reason = "client-closed";
        }

        ngx_xmpp_session_close(s);
        return;
    }

    if (s->state == NGX_XMPP_ST_CLOSING) {
        return;
    }

    if (ngx_xmpp_stream_is(n, "open", NGX_XMPP_NS_FRAMING)) {
        ngx_xmpp_stream_open(s, n);
        return;
    }

    switch (s->state) {

    case NGX_XMPP_ST_WAIT_OPEN:
        ngx_xmpp_session_error(s, "not-authorized", "expected <open/>");
        return;

    case NGX_XMPP_ST_WAIT_AUTH:
    case NGX_XMPP_ST_AUTH_PENDING:
        if (n->ns.len == sizeof(NGX_XMPP_NS_SASL) - 1
            && ngx_strncmp(n->ns.data, NGX_XMPP_NS_SASL, n->ns.len) == 0)
        {
            ngx_xmpp_stream_sasl(s, n);
            return;
        }

        if (ngx_xmpp_stream_is(n, "starttls", NGX_XMPP_NS_TLS)) {
            ngx_xmpp_stream_starttls(s);
            return;
        }

        break;

    case NGX_XMPP_ST_WAIT_BIND:
        if (ngx_xmpp_stream_is_sm(n)) {
            ngx_xmpp_sm_element(s, n);
            return;
        }

        if (ngx_xmpp_sm_resuming(s)) {
            /* XEP-0198: nothing else until <resumed/> or <failed/> */
            return;
        }

        if (ngx_xmpp_stream_is_csi(n)) {
            ngx_xmpp_csi_element(s, n);
            return;
        }

        if (ngx_xmpp_stream_is(n, "iq", NGX_XMPP_NS_CLIENT)) {
            ngx_xmpp_stream_bind(s, n);
            return;
        }

        break;

    default: /* NGX_XMPP_ST_SESSION */
        if (ngx_xmpp_stream_is_stanza(n)) {
            ngx_xmpp_stream_stanza(s, n);
            ngx_xmpp_sm_handled(s);
            return;
        }

        if (ngx_xmpp_stream_is_sm(n)) {
            ngx_xmpp_sm_element(s, n);
            return;
        }

        if (ngx_xmpp_stream_is_csi(n)) {
            ngx_xmpp_csi_element(s, n);
            return;
        }

        ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
        return;
    }

    /* XEP-0352 section 3: a client state exists once authenticated */
    if (ngx_xmpp_stream_is_stanza(n) || ngx_xmpp_stream_is_csi(n)) {
        ngx_xmpp_session_error(s, "not-authorized", NULL);
        return;
    }

    ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
}


static ngx_int_t
ngx_xmpp_stream_domain_is_ours(ngx_xmpp_session_t *s, ngx_str_t *d)
{
    size_t  len;

    len = d->len;

    /* RFC 7622 section 3.2: a trailing dot does not count */
    if (len > 1 && d->data[len - 1] == '.') {
        len--;
    }

    return len == s->conf->domain.len
           && ngx_strncasecmp(d->data, s->conf->domain.data, len) == 0;
}


/* a TCP stream's <stream:stream> header: as <open/> is for WebSocket */
void
ngx_xmpp_stream_header(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    ngx_xmpp_stream_open(s, n);
}


/*
 * RFC 6120 5.4.2: <proceed/>, then TLS, then a new stream.  Where TLS
 * cannot be had (already on, no certificate, not TCP, too late) the
 * answer is <failure/> and the stream closes (5.4.2.2).
 */
static void
ngx_xmpp_stream_starttls(ngx_xmpp_session_t *s)
{
    static u_char  proceed[] = "<proceed xmlns='" NGX_XMPP_NS_TLS "'/>";
    static u_char  failure[] = "<failure xmlns='" NGX_XMPP_NS_TLS "'/>";

    if (s->state != NGX_XMPP_ST_WAIT_AUTH || s->secure || s->sasl_started
        || !s->tls_available || s->transport->starttls == NULL)
    {
        (void) ngx_xmpp_session_send(s, failure, sizeof(failure) - 1);
        ngx_xmpp_session_close(s);
        return;
    }

    if (ngx_xmpp_session_send(s, proceed, sizeof(proceed) - 1) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    s->state = NGX_XMPP_ST_WAIT_OPEN;
    s->tls_available = 0;

    if (ngx_xmpp_parser_restart(s) != NGX_OK
        || s->transport->starttls(s) != NGX_OK)
    {
        ngx_xmpp_session_finalize(s);
    }
}


/* RFC 7395 section 3.4 / RFC 6120 section 4.7 */
static void
ngx_xmpp_stream_open(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    ngx_str_t  *to, *version;

    if (s->state != NGX_XMPP_ST_WAIT_OPEN
        && s->state != NGX_XMPP_ST_WAIT_AUTH)
    {
        ngx_xmpp_session_error(s, "policy-violation",
                               "stream restart out of order");
        return;
    }

    to = ngx_xmpp_node_attr(n, "to");
    version = ngx_xmpp_node_attr(n, "version");

    if (s->transport->open(s) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (to && !ngx_xmpp_stream_domain_is_ours(s, to)) {
        ngx_xmpp_session_error(s, "host-unknown", NULL);
        return;
    }

    if (version == NULL || version->len != 3
        || ngx_strncmp(version->data, "1.0", 3) != 0)
    {
        ngx_xmpp_session_error(s, "unsupported-version", NULL);
        return;
    }

    if (!s->authenticated && !s->secure && !s->conf->allow_plaintext_auth
        && !s->tls_available)
    {
        ngx_xmpp_session_error(s, "policy-violation",
                               "authentication requires TLS");
        return;
    }

    s->state = s->authenticated ? NGX_XMPP_ST_WAIT_BIND
                                : NGX_XMPP_ST_WAIT_AUTH;

    if (ngx_xmpp_stream_features(s) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
    }
}


ngx_int_t
ngx_xmpp_stream_features(ngx_xmpp_session_t *s)
{
    ngx_int_t         rc;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(4096);

    ngx_xmpp_wbuf_lit(b, "<stream:features xmlns:stream='"
                      NGX_XMPP_NS_STREAM "'>");

    if (!s->authenticated) {
        if (s->tls_available && !s->secure) {
            /* RFC 6120 5.3.1: while TLS is required, nothing else */
            ngx_xmpp_wbuf_lit(b, "<starttls xmlns='" NGX_XMPP_NS_TLS "'>");

            if (!s->conf->allow_plaintext_auth) {
                ngx_xmpp_wbuf_lit(b, "<required/>");
            }

            ngx_xmpp_wbuf_lit(b, "</starttls>");
        }

        if (s->secure || s->conf->allow_plaintext_auth) {
            ngx_xmpp_wbuf_lit(b, "<mechanisms xmlns='" NGX_XMPP_NS_SASL
                              "'><mechanism>PLAIN</mechanism></mechanisms>");
        }

    } else {
        /* the session element is kept for older clients (RFC 6121 A) */
        ngx_xmpp_wbuf_lit(b, "<bind xmlns='" NGX_XMPP_NS_BIND "'/>"
                          "<session xmlns='" NGX_XMPP_NS_SESSION "'>"
                          "<optional/></session>"
                          /* RFC 6121 2.6.1: roster versioning */
                          "<ver xmlns='urn:xmpp:features:rosterver'/>");

        /* XEP-0115 6.3: the server's own caps */
        ngx_xmpp_wbuf_lit(b, "<c xmlns='http://jabber.org/protocol/caps'"
                          " hash='sha-1' node='" NGX_XMPP_CAPS_NODE
                          "' ver='");
        ngx_xmpp_wbuf_nstr(b, ngx_xmpp_caps_server_ver());
        ngx_xmpp_wbuf_lit(b, "'/>");

        if (ngx_xmpp_sm_offered(s)) {
            /* XEP-0198 section 2 */
            ngx_xmpp_wbuf_lit(b, "<sm xmlns='urn:xmpp:sm:3'/>");
        }

        /* XEP-0352 section 2 */
        ngx_xmpp_wbuf_lit(b, "<csi xmlns='" NGX_XMPP_NS_CSI "'/>");
    }

    ngx_xmpp_wbuf_lit(b, "</stream:features>");

    rc = ngx_xmpp_session_send_wbuf(s, b);

    return rc == NGX_ERROR ? NGX_ERROR : NGX_OK;
}


static void
ngx_xmpp_stream_sasl_reply(ngx_xmpp_session_t *s, const char *xml)
{
    (void) ngx_xmpp_session_send(s, (u_char *) xml, ngx_strlen(xml));
}


static void
ngx_xmpp_stream_sasl(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    ngx_str_t  *mech;

    if (s->state == NGX_XMPP_ST_AUTH_PENDING) {
        ngx_xmpp_session_error(s, "policy-violation",
                               "authentication already in progress");
        return;
    }

    if (ngx_xmpp_stream_is(n, "abort", NGX_XMPP_NS_SASL)) {
        s->sasl_started = 0;
        ngx_xmpp_stream_sasl_failure(s, "aborted");
        return;
    }

    if (ngx_xmpp_stream_is(n, "response", NGX_XMPP_NS_SASL)) {
        if (!s->sasl_started) {
            ngx_xmpp_stream_sasl_failure(s, "malformed-request");
            return;
        }

        ngx_xmpp_stream_sasl_plain(s, n);
        return;
    }

    if (!ngx_xmpp_stream_is(n, "auth", NGX_XMPP_NS_SASL)) {
        ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
        return;
    }

    /* RFC 6120 6.5.3: PLAIN only inside TLS (or where allowed) */
    if (!s->secure && !s->conf->allow_plaintext_auth) {
        ngx_xmpp_stream_sasl_failure(s, "encryption-required");
        return;
    }

    mech = ngx_xmpp_node_attr(n, "mechanism");

    if (mech == NULL || mech->len != 5
        || ngx_strncmp(mech->data, "PLAIN", 5) != 0)
    {
        ngx_xmpp_stream_sasl_failure(s, "invalid-mechanism");
        return;
    }

    if (n->child == NULL) {
        /* no initial response: an empty challenge (RFC 6120 6.4.2) */
        s->sasl_started = 1;
        ngx_xmpp_stream_sasl_reply(s, "<challenge xmlns='"
                                   NGX_XMPP_NS_SASL "'/>");
        return;
    }

    ngx_xmpp_stream_sasl_plain(s, n);
}


static void
ngx_xmpp_stream_sasl_plain(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char                 buf[1024], *at;
    size_t                 login_len;
    time_t                 left;
    ngx_str_t              text, decoded, addr;
    const u_char          *login;
    ngx_xmpp_sasl_plain_t  plain;

    s->sasl_started = 0;
    s->user.len = 0;

    if (ngx_xmpp_node_text(s->stanza_pool, n, &text) != NGX_OK) {
        ngx_xmpp_stream_sasl_failure(s, "temporary-auth-failure");
        return;
    }

    if (text.len > ngx_base64_encoded_length(sizeof(buf))) {
        ngx_xmpp_stream_sasl_failure(s, "malformed-request");
        return;
    }

    decoded.data = buf;

    if (text.len == 0 || ngx_decode_base64(&decoded, &text) != NGX_OK) {
        ngx_xmpp_stream_sasl_failure(s, text.len ? "incorrect-encoding"
                                                 : "malformed-request");
        return;
    }

    if (ngx_xmpp_sasl_plain_parse(decoded.data, decoded.len, &plain) != 0) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_failure(s, "malformed-request");
        return;
    }

    /* the login is the localpart; "user@domain" is accepted too */
    login = plain.authcid;
    login_len = plain.authcid_len;

    at = ngx_strlchr((u_char *) login, (u_char *) login + login_len, '@');

    if (at) {
        text.data = at + 1;
        text.len = login + login_len - at - 1;

        if (!ngx_xmpp_stream_domain_is_ours(s, &text)) {
            ngx_explicit_memzero(buf, sizeof(buf));
            ngx_xmpp_stream_sasl_failure(s, "not-authorized");
            return;
        }

        login_len = at - login;
    }

    if (!ngx_xmpp_jid_local_valid(login, login_len)) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_failure(s, "not-authorized");
        return;
    }

    s->user.data = ngx_pnalloc(s->pool, login_len);
    if (s->user.data == NULL) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_failure(s, "temporary-auth-failure");
        return;
    }

    ngx_memcpy(s->user.data, login, login_len);
    s->user.len = login_len;
    ngx_xmpp_ascii_lower(s->user.data, s->user.len);

    /* RFC 6120 6.3.8: only the user's own bare JID may be the authzid */
    if (plain.authzid_len
        && (plain.authzid_len != s->user.len + 1 + s->conf->domain.len
            || ngx_strncasecmp((u_char *) plain.authzid, s->user.data,
                               s->user.len) != 0
            || plain.authzid[s->user.len] != '@'
            || ngx_strncasecmp((u_char *) plain.authzid + s->user.len + 1,
                               s->conf->domain.data, s->conf->domain.len)
               != 0))
    {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_failure(s, "invalid-authzid");
        return;
    }

    /* too many refusals from this address: not asked (ngx_xmpp_fail.c) */
    addr.data = (u_char *) s->audit_ip;
    addr.len = ngx_strlen(s->audit_ip);
    left = ngx_xmpp_auth_locked(s->conf, &addr);

    if (left) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_throttled(s, left, "from this address");
        return;
    }

    /* ... or for this login, from anywhere */
    left = ngx_xmpp_auth_account_locked(s->conf, &s->user);

    if (left) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_throttled(s, left, "for this account");
        return;
    }

    s->state = NGX_XMPP_ST_AUTH_PENDING;

    if (ngx_xmpp_auth_start(s, s->user.data, s->user.len, plain.passwd,
                            plain.passwd_len)
        != NGX_OK)
    {
        s->state = NGX_XMPP_ST_WAIT_AUTH;
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_xmpp_stream_sasl_failure(s, "temporary-auth-failure");
        return;
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_add_timer(&s->timer, s->conf->ldap_timeout);
}


static void
ngx_xmpp_stream_sasl_failure(ngx_xmpp_session_t *s, const char *condition)
{
    ngx_str_t   addr;
    ngx_uint_t  failures;

    /* every failed attempt is a record; an abort is no attempt */
    if (ngx_strcmp(condition, "aborted") != 0) {
        (void) ngx_xmpp_audit_signin(s, 0, condition,
                                     s->auth_reason ? s->auth_reason
                                                    : condition);
        ngx_xmpp_metrics_signin(0);
    }

    s->auth_reason = NULL;

    /*
     * Counted before the client hears of it: its next attempt, on a new
     * connection that the other worker may take, must find the count
     */
    if (ngx_strcmp(condition, "not-authorized") == 0) {
        addr.data = (u_char *) s->audit_ip;
        addr.len = ngx_strlen(s->audit_ip);
        failures = ngx_xmpp_auth_failed(s->conf, &addr);

        if (failures) {
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "xmpp: sign-ins from %V refused for %M s: %ui "
                          "refused within %M s", &addr,
                          s->conf->address_lockout / 1000, failures,
                          s->conf->address_lockout / 1000);
        }
    }

    ngx_xmpp_stream_sasl_send(s, condition, NULL, 0);

    if (ngx_strcmp(condition, "temporary-auth-failure") == 0) {
        return;
    }

    /* RFC 6120 section 6.4.5: a bounded number of retries */
    if (++s->auth_failures >= s->conf->max_auth_failures) {
        ngx_xmpp_session_error(s, "policy-violation",
                               "too many failed authentication attempts");
    }
}


/*
 * The address or the account is locked out ("what": "from this
 * address", "for this account"): no directory request, a record of the
 * attempt, <temporary-auth-failure/> with the time left, and the end
 * of the stream (a client that retried on the same stream would get
 * the same answer).
 */
static void
ngx_xmpp_stream_sasl_throttled(ngx_xmpp_session_t *s, time_t left,
    const char *what)
{
    u_char  reason[64], text[128], *p;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: sign-in of \"%V\" from %s refused: too many "
                  "refused sign-ins %s, %T s left",
                  &s->user, s->audit_ip, what, left);

    p = ngx_snprintf(reason, sizeof(reason) - 1,
                     "too many failed sign-ins %s", what);
    *p = '\0';

    (void) ngx_xmpp_audit_signin(s, 0, "temporary-auth-failure",
                                 (const char *) reason);
    ngx_xmpp_metrics_signin_throttled();

    p = ngx_snprintf(text, sizeof(text), "%s; try again in %T s", reason,
                     left);

    ngx_xmpp_stream_sasl_send(s, "temporary-auth-failure", text, p - text);

    ngx_xmpp_session_error(s, "policy-violation", (const char *) reason);
}


/* <failure/> with its condition and an optional text (ASCII, ours) */
static void
ngx_xmpp_stream_sasl_send(ngx_xmpp_session_t *s, const char *condition,
    u_char *text, size_t len)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(1024);

    ngx_xmpp_wbuf_lit(b, "<failure xmlns='" NGX_XMPP_NS_SASL "'><");
    ngx_xmpp_wbuf_str(b, condition);
    ngx_xmpp_wbuf_lit(b, "/>");

    if (len) {
        ngx_xmpp_wbuf_lit(b, "<text xml:lang='en'>");
        ngx_xmpp_wbuf_add(b, text, len);
        ngx_xmpp_wbuf_lit(b, "</text>");
    }

    ngx_xmpp_wbuf_lit(b, "</failure>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* back on the event loop with the directory's answer */
void
ngx_xmpp_stream_auth_done(ngx_xmpp_session_t *s, cdir_auth_result_t *res)
{
    ngx_uint_t         failures;
    ngx_connection_t  *c;

    if (s->state != NGX_XMPP_ST_AUTH_PENDING) {
        return;
    }

    c = s->connection;
    s->state = NGX_XMPP_ST_WAIT_AUTH;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_add_timer(&s->timer, s->conf->auth_timeout);

    /* the reason outlives the task that holds res (auth_reason, audit) */
    if (res->status != CDIR_OK) {
        s->auth_reason = ngx_xmpp_stream_reason(s, res->reason);
    }

    switch (res->status) {

    case CDIR_OK:
        /* the directory took the password: its count starts again */
        (void) ngx_xmpp_auth_account_count(s->conf, &s->user, 0);

        if (ngx_xmpp_stream_directory_user(s, res) != NGX_OK) {
            s->auth_reason = "directory name is not a valid JID localpart";
            ngx_xmpp_stream_sasl_failure(s, "not-authorized");
            return;
        }

        if (ngx_xmpp_audit_signin(s, 1, NULL,
                                  res->from_cache ? "credentials cache"
                                                  : NULL)
            != NGX_OK)
        {
            /* CAPP: no access that cannot be recorded */
            s->auth_reason = "audit journal unavailable";
            ngx_xmpp_stream_sasl_failure(s, "temporary-auth-failure");
            return;
        }

        ngx_xmpp_metrics_signin(1);

        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: \"%V\" signed in%s, roles 0x%xi", &s->user,
                      res->from_cache ? " from the credentials cache "
                                        "(directory unavailable)" : "",
                      s->roles);
        s->authenticated = 1;
        s->state = NGX_XMPP_ST_WAIT_OPEN;

        if (ngx_xmpp_parser_restart(s) != NGX_OK) {
            ngx_xmpp_session_finalize(s);
            return;
        }

        ngx_xmpp_stream_sasl_reply(s, "<success xmlns='"
                                   NGX_XMPP_NS_SASL "'/>");
        return;

    case CDIR_DENIED:
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: sign-in of \"%V\" refused: %s",
                      &s->user, res->reason);

        failures = ngx_xmpp_auth_account_count(s->conf, &s->user, 1);

        if (failures) {
            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "xmpp: sign-ins of \"%V\" refused for %M s: %ui "
                          "refused within %M s", &s->user,
                          s->conf->account_lockout / 1000, failures,
                          s->conf->account_lockout / 1000);
        }

        ngx_xmpp_stream_sasl_failure(s, "not-authorized");
        return;

    default:
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "xmpp: sign-in of \"%V\" failed: directory %s",
                      &s->user, res->reason);
        ngx_xmpp_stream_sasl_failure(s, "temporary-auth-failure");
        return;
    }
}


/* a copy of the directory's reason in the session's pool */
static const char *
ngx_xmpp_stream_reason(ngx_xmpp_session_t *s, const char *reason)
{
    size_t   len;
    u_char  *p;

    len = ngx_strlen(reason);

    p = ngx_pnalloc(s->pool, len + 1);
    if (p == NULL) {
        return "directory error";
    }

    ngx_cpystrn(p, (u_char *) reason, len + 1);

    return (const char *) p;
}


/*
 * The JID localpart is the directory's login name attribute
 * (conclave_ldap_name_attribute), which may differ from what was typed
 * (a mail address, a userPrincipalName, other case); it must still be a
 * valid localpart (RFC 7622 section 3.3).  The DN and roles are kept for
 * revalidation and for the admin console.
 */
static ngx_int_t
ngx_xmpp_stream_directory_user(ngx_xmpp_session_t *s, cdir_auth_result_t *res)
{
    size_t   len;
    u_char  *p;

    len = ngx_strlen(res->name);

    if (len && (len != s->user.len
                || ngx_strncasecmp((u_char *) res->name, s->user.data, len)
                   != 0))
    {
        if (!ngx_xmpp_jid_local_valid((u_char *) res->name, len)) {
            return NGX_ERROR;
        }

        p = ngx_pnalloc(s->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, res->name, len);
        ngx_xmpp_ascii_lower(p, len);

        s->user.data = p;
        s->user.len = len;
    }

    len = ngx_strlen(res->dn);

    s->ldap_dn.data = ngx_pnalloc(s->pool, len + 1);
    if (s->ldap_dn.data == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(s->ldap_dn.data, (u_char *) res->dn, len + 1);
    s->ldap_dn.len = len;
    s->roles = res->roles;

    /* XEP-0153: read with the sign-in search, for every presence */
    ngx_cpystrn(s->photo_hash, (u_char *) res->photo_hash,
                sizeof(s->photo_hash));
    s->photo_dir = (s->photo_hash[0] != '\0');

    return NGX_OK;
}


static void
ngx_xmpp_stream_iq_reply(ngx_xmpp_session_t *s, ngx_str_t *id,
    const char *payload)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(4096 + s->jid.full.len);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='");
    ngx_xmpp_wbuf_str(b, payload ? "error" : "result");
    ngx_xmpp_wbuf_lit(b, "' id='");
    if (id) {
        ngx_xmpp_wbuf_escs(b, id);
    }
    ngx_xmpp_wbuf_lit(b, "'>");

    if (payload) {
        ngx_xmpp_wbuf_str(b, payload);
    }

    ngx_xmpp_wbuf_lit(b, "</iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* RFC 6120 section 7: resource binding, the only thing before SESSION */
static void
ngx_xmpp_stream_bind(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char            res[20];
    uint32_t          r[2];
    uint64_t          old_sid;
    ngx_int_t         rc;
    ngx_str_t        *type, *id, text;
    ngx_pid_t         old_pid;
    ngx_xmpp_node_t  *bind, *rn;
    ngx_xmpp_jid_t    jid;

    type = ngx_xmpp_node_attr(n, "type");
    id = ngx_xmpp_node_attr(n, "id");

    bind = ngx_xmpp_node_child(n, "bind", NGX_XMPP_NS_BIND);

    if (bind == NULL) {
        if (ngx_xmpp_node_child(n, "session", NGX_XMPP_NS_SESSION)) {
            ngx_xmpp_stream_iq_reply(s, id, NULL);
            return;
        }

        ngx_xmpp_session_error(s, "not-authorized", "bind a resource first");
        return;
    }

    if (type == NULL || type->len != 3
        || ngx_strncmp(type->data, "set", 3) != 0 || id == NULL)
    {
        ngx_xmpp_stream_iq_reply(s, id, "<error type='modify'><bad-request"
                                 " xmlns='" NGX_XMPP_NS_STANZAS "'/></error>");
        return;
    }

    rn = ngx_xmpp_node_child(bind, "resource", NGX_XMPP_NS_BIND);

    text.len = 0;

    if (rn && ngx_xmpp_node_text(s->pool, rn, &text) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (text.len == 0) {
        /* RFC 6120 7.6.2.1: the server picks a random resource */
        r[0] = (uint32_t) ngx_random();
        r[1] = (uint32_t) ngx_random();
        text.len = ngx_sprintf(res, "cv-%08xD%08xD", r[0], r[1]) - res;
        text.data = res;

    } else if (!ngx_xmpp_jid_resource_valid(text.data, text.len)) {
        ngx_xmpp_stream_iq_reply(s, id, "<error type='modify'><bad-request"
                                 " xmlns='" NGX_XMPP_NS_STANZAS "'/></error>");
        return;
    }

    if (ngx_xmpp_jid_make(s->pool, &s->user, &s->conf->domain, &text, &jid)
        != NGX_OK)
    {
        ngx_xmpp_session_finalize(s);
        return;
    }

    s->jid = jid;

    if (ngx_xmpp_audit_session_bound(s) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    rc = ngx_xmpp_registry_add(s, &old_pid, &old_sid);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        /* RFC 6120 7.7.2.2: policy "reject" */
        ngx_xmpp_stream_iq_reply(s, id, "<error type='cancel'><conflict"
                                 " xmlns='" NGX_XMPP_NS_STANZAS "'/></error>");
        return;

    default:
        ngx_xmpp_stream_iq_reply(s, id, "<error type='wait'>"
                                 "<resource-constraint xmlns='"
                                 NGX_XMPP_NS_STANZAS "'/></error>");
        return;
    }

    s->bound = 1;
    s->state = NGX_XMPP_ST_SESSION;
    ngx_xmpp_metrics_session(s, 1);
    ngx_xmpp_blocking_start(s);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: bound \"%V\"", &s->jid.full);

    if (old_pid) {
        /* RFC 6120 7.7.2.2: policy "override" ends the older session */
        ngx_xmpp_router_kick(old_pid, old_sid);
    }

    /*
     * XEP-0398 section 4: a user's own avatar hash (MariaDB) is known
     * before the first presence, which a client sends only after this
     * result; ngx_xmpp_avatar.c then sends it.
     */
    if (ngx_xmpp_avatar_bind(s, id) == NGX_OK) {
        return;
    }

    ngx_xmpp_stream_bind_result(s, id);
}


void
ngx_xmpp_stream_bind_result(ngx_xmpp_session_t *s, ngx_str_t *id)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " id='");
    ngx_xmpp_wbuf_escs(b, id);
    ngx_xmpp_wbuf_lit(b, "'><bind xmlns='" NGX_XMPP_NS_BIND "'><jid>");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "</jid></bind></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* RFC 6120 section 8.1.2.1: the server stamps and checks "from" */
static ngx_int_t
ngx_xmpp_stream_check_from(ngx_xmpp_session_t *s, ngx_str_t *from)
{
    ngx_xmpp_jid_t  jid;

    if (ngx_xmpp_jid_parse(s->stanza_pool, from, &jid) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (jid.bare.len != s->jid.bare.len
        || ngx_strncmp(jid.bare.data, s->jid.bare.data, jid.bare.len) != 0)
    {
        return NGX_DECLINED;
    }

    if (jid.resource.len
        && (jid.resource.len != s->jid.resource.len
            || ngx_strncmp(jid.resource.data, s->jid.resource.data,
                           jid.resource.len) != 0))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_xmpp_stream_is_mam(ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_node_t  *q;

    if (st->type.len != 3
        || (ngx_strncmp(st->type.data, "get", 3) != 0
            && ngx_strncmp(st->type.data, "set", 3) != 0))
    {
        return 0;
    }

    q = ngx_xmpp_node_first_element(st->node);

    return q && q->name.len == 5 && ngx_strncmp(q->name.data, "query", 5) == 0
           && q->ns.len == sizeof(NGX_XMPP_NS_MAM) - 1
           && ngx_strncmp(q->ns.data, NGX_XMPP_NS_MAM, q->ns.len) == 0;
}


/*
 * XEP-0163 PEP (<pubsub/>) and XEP-0049 private storage on a bare JID
 * of ours: the server answers for the account, whoever it is; the
 * handlers refuse what is not the requester's own.
 */
static ngx_xmpp_node_t *
ngx_xmpp_stream_is_pep(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_node_t  *q;

    if (st->kind != NGX_XMPP_STANZA_IQ
        || (st->has_to
            && (st->to.resource.len || st->to.local.len == 0
                || !ngx_xmpp_stream_domain_is_ours(s, &st->to.domain))))
    {
        return NULL;
    }

    q = ngx_xmpp_node_first_element(st->node);

    if (q == NULL) {
        return NULL;
    }

    if (ngx_xmpp_stream_is(q, "pubsub", NGX_XMPP_NS_PUBSUB)
        || ngx_xmpp_stream_is(q, "pubsub", NGX_XMPP_NS_PUBSUB_OWNER)
        || ngx_xmpp_stream_is(q, "query", NGX_XMPP_NS_PRIVATE))
    {
        return q;
    }

    return NULL;
}


/* RFC 6121 2.3.3: a roster request to another account is refused */
static ngx_int_t
ngx_xmpp_stream_is_roster(ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_node_t  *q;

    if (st->to.resource.len || st->to.local.len == 0
        || st->type.len != 3
        || (ngx_strncmp(st->type.data, "get", 3) != 0
            && ngx_strncmp(st->type.data, "set", 3) != 0))
    {
        return 0;
    }

    q = ngx_xmpp_node_first_element(st->node);

    return q && ngx_xmpp_stream_is(q, "query", NGX_XMPP_NS_ROSTER);
}


static void
ngx_xmpp_stream_stanza(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    ngx_str_t          *v;
    ngx_xmpp_node_t    *q;
    ngx_xmpp_stanza_t   st;

    ngx_memzero(&st, sizeof(ngx_xmpp_stanza_t));

    st.node = n;
    st.pool = s->stanza_pool;

    switch (n->name.data[0]) {
    case 'm':
        st.kind = NGX_XMPP_STANZA_MESSAGE;
        break;
    case 'p':
        st.kind = NGX_XMPP_STANZA_PRESENCE;
        break;
    default:
        st.kind = NGX_XMPP_STANZA_IQ;
        break;
    }

    v = ngx_xmpp_node_attr(n, "type");
    if (v) {
        st.type = *v;
    }

    v = ngx_xmpp_node_attr(n, "id");
    if (v) {
        st.id = *v;
    }

    v = ngx_xmpp_node_attr(n, "from");
    if (v && ngx_xmpp_stream_check_from(s, v) != NGX_OK) {
        ngx_xmpp_session_error(s, "invalid-from", NULL);
        return;
    }

    st.from = s->jid;

    if (ngx_xmpp_node_set_attr(st.pool, n, "from", &s->jid.full) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    v = ngx_xmpp_node_attr(n, "to");

    if (v) {
        if (ngx_xmpp_jid_parse(st.pool, v, &st.to) != NGX_OK) {
            ngx_xmpp_router_error(s, &st, "modify", "jid-malformed");
            return;
        }

        st.has_to = 1;
    }

    if (st.kind == NGX_XMPP_STANZA_IQ) {
        /* RFC 6120 8.2.3: an id, a known type, one child for get/set */
        if (st.id.len == 0 || st.type.len == 0) {
            ngx_xmpp_router_error(s, &st, "modify", "bad-request");
            return;
        }

        if ((st.type.len == 3
             && (ngx_strncmp(st.type.data, "get", 3) == 0
                 || ngx_strncmp(st.type.data, "set", 3) == 0)))
        {
            if (ngx_xmpp_node_nchildren(n) != 1) {
                ngx_xmpp_router_error(s, &st, "modify", "bad-request");
                return;
            }

        } else if (!(st.type.len == 6
                     && ngx_strncmp(st.type.data, "result", 6) == 0)
                   && !(st.type.len == 5
                        && ngx_strncmp(st.type.data, "error", 5) == 0))
        {
            ngx_xmpp_router_error(s, &st, "modify", "bad-request");
            return;
        }
    }

    if (ngx_xmpp_blocking_outbound(s, &st) == NGX_OK) {
        /* XEP-0191 section 3.5: the user blocked the addressee */
        return;
    }

    if (st.kind == NGX_XMPP_STANZA_PRESENCE) {
        ngx_xmpp_presence_handle(s, &st);
        return;
    }

    if (st.has_to && ngx_xmpp_muc_ours(s->conf, &st.to.domain)) {
        /* XEP-0045: the conference component is served in-process */
        ngx_xmpp_muc_stanza(s, &st);
        return;
    }

    if (st.kind == NGX_XMPP_STANZA_IQ
        && (!st.has_to
            || (st.to.resource.len == 0 && st.to.local.len
                && ngx_xmpp_stream_domain_is_ours(s, &st.to.domain)))
        && ngx_xmpp_vcard_is(&st))
    {
        /* XEP-0054: any user's vCard, answered from the directory */
        ngx_xmpp_vcard_iq(s, &st);
        return;
    }

    if (st.kind == NGX_XMPP_STANZA_IQ
        && (!st.has_to || st.to.resource.len == 0)
        && ngx_xmpp_stream_is_mam(&st))
    {
        /* XEP-0313: the user's archive, or someone else's (refused) */
        ngx_xmpp_mam_iq(s, &st);
        return;
    }

    q = ngx_xmpp_stream_is_pep(s, &st);

    if (q && q->name.data[0] == 'p') {
        ngx_xmpp_pep_iq(s, &st, q);
        return;
    }

    if (q) {
        ngx_xmpp_private_iq(s, &st, q);
        return;
    }

    if (st.kind == NGX_XMPP_STANZA_IQ
        && (!st.has_to
            || (st.to.local.len == 0 && st.to.resource.len == 0
                && ngx_xmpp_stream_domain_is_ours(s, &st.to.domain))
            || (st.to.resource.len == 0
                && st.to.bare.len == s->jid.bare.len
                && ngx_strncmp(st.to.bare.data, s->jid.bare.data,
                               s->jid.bare.len) == 0)
            || ngx_xmpp_stream_is_roster(&st)))
    {
        /* RFC 6120 10.3: the server answers for itself and the account */
        ngx_xmpp_disco_iq(s, &st);
        return;
    }

    ngx_xmpp_router_route(s, &st);
}
