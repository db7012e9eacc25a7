
/*
 * The console's operations views for admins (issue 8 item 7): the
 * online sessions from the shared registry, ending one of them, and
 * the system status.  Nothing here waits: the registry and the audit
 * figures are in shared memory, and a kick is one datagram to the
 * worker that owns the session.
 */


#include "ngx_xmpp_admin.h"


/* GET sessions: every bound resource, in every worker */
ngx_int_t
ngx_xmpp_admin_sessions(ngx_xmpp_admin_ctx_t *ctx)
{
    json_t  *list;

    list = ngx_xmpp_registry_sessions(ctx->xcf);
    if (list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_xmpp_admin_audit(ctx, "sessions", 1, NULL, NULL) != NGX_OK) {
        json_decref(list);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    return ngx_xmpp_admin_send_json(ctx->request, NGX_HTTP_OK,
                                    json_pack("{so}", "sessions", list));
}


static ngx_int_t
ngx_xmpp_admin_kick_body(ngx_xmpp_admin_ctx_t *ctx, json_t *body)
{
    json_t              *jid, *session, *worker;
    uint64_t             sid;
    ngx_pid_t            pid;
    ngx_str_t            bare;
    ngx_uint_t           i, n;
    const char          *hex;
    ngx_xmpp_route_t    *routes;
    ngx_http_request_t  *r;

    r = ctx->request;

    jid = body ? json_object_get(body, "jid") : NULL;
    session = body ? json_object_get(body, "session") : NULL;
    worker = body ? json_object_get(body, "worker_pid") : NULL;

    /* a session id is unique within its worker only */
    if (!json_is_string(jid) || !json_is_string(session)
        || !json_is_integer(worker) || json_integer_value(worker) <= 0
        || json_integer_value(worker) > NGX_MAX_INT32_VALUE
        || json_string_length(jid) > 3 * NGX_XMPP_JID_PART_MAX + 2
        || json_string_length(session) != 16)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST, "bad-request");
    }

    hex = json_string_value(session);
    sid = 0;

    for (i = 0; i < 16; i++) {
        n = ngx_hextoi((u_char *) hex + i, 1);
        if (n == (ngx_uint_t) NGX_ERROR) {
            return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                        "bad-request");
        }
        sid = (sid << 4) | n;
    }

    pid = (ngx_pid_t) json_integer_value(worker);

    bare.data = (u_char *) json_string_value(jid);
    bare.len = json_string_length(jid);

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(ctx->xcf, &bare, routes,
                                 NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].sid == sid && routes[i].pid == pid) {
            break;
        }
    }

    if (i == n) {
        (void) ngx_xmpp_admin_audit(ctx, "kick", 0, "no-such-session",
                                    json_pack("{sOsOsO}", "jid", jid,
                                              "session", session,
                                              "worker_pid", worker));
        return ngx_xmpp_admin_error(r, NGX_HTTP_NOT_FOUND,
                                    "no-such-session");
    }

    /* recorded first: an action that cannot be recorded does not happen */
    if (ngx_xmpp_admin_audit(ctx, "kick", 1, NULL,
                             json_pack("{sOsOsOss#}", "jid", jid,
                                       "session", session,
                                       "worker_pid", worker, "resource",
                                       routes[i].resource,
                                       (int) routes[i].resource_len))
        != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "xmpp: console: \"%s\" ends a session of \"%V\"",
                  ctx->sess.user, &bare);

    if (routes[i].pid == ngx_pid) {
        ngx_xmpp_admin_kick_local(sid);

    } else if (ngx_xmpp_ipc_send(routes[i].pid, NGX_XMPP_IPC_ADMIN_KICK, sid,
                                 NULL, 0)
               != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "worker-unreachable");
    }

    return ngx_xmpp_admin_send_json(r, NGX_HTTP_OK,
                                    json_pack("{sb}", "kicked", 1));
}


/* POST kick {"jid", "worker_pid", "session"}, as GET sessions has them */
ngx_int_t
ngx_xmpp_admin_kick(ngx_xmpp_admin_ctx_t *ctx)
{
    return ngx_xmpp_admin_read_json(ctx, ngx_xmpp_admin_kick_body);
}


/* in the owning worker: RFC 6120 4.9.3.14, the stream ends by policy */
void
ngx_xmpp_admin_kick_local(uint64_t sid)
{
    ngx_xmpp_session_t  *s;

    s = ngx_xmpp_session_find(sid);

    if (s) {
        ngx_xmpp_session_error(s, "policy-violation",
                               "ended by an administrator");
    }
}


/*
 * The login of a body's "login": "alice" or "alice@<our domain>", as a
 * client may type it, in lower case as the XMPP lockout counts it.
 */
static ngx_int_t
ngx_xmpp_admin_unlock_login(ngx_xmpp_admin_ctx_t *ctx, json_t *v,
    ngx_str_t *login)
{
    size_t   len;
    u_char  *p;

    len = json_string_length(v);
    p = (u_char *) json_string_value(v);

    if (len > 2 * NGX_XMPP_JID_PART_MAX + 1
        || ngx_xmpp_admin_local_part(ctx->xcf, p, &len) != NGX_OK
        || !ngx_xmpp_jid_local_valid(p, len))
    {
        return NGX_ERROR;
    }

    login->data = ngx_pnalloc(ctx->request->pool, len);
    if (login->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(login->data, p, len);
    login->len = len;
    ngx_xmpp_ascii_lower(login->data, len);

    return NGX_OK;
}


/* a body's "address", written as the server writes client addresses */
static ngx_int_t
ngx_xmpp_admin_unlock_address(ngx_xmpp_admin_ctx_t *ctx, json_t *v,
    ngx_str_t *text)
{
    ngx_addr_t  addr;

    if (json_string_length(v) == 0
        || json_string_length(v) >= NGX_SOCKADDR_STRLEN
        || ngx_parse_addr(ctx->request->pool, &addr,
                          (u_char *) json_string_value(v),
                          json_string_length(v))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    text->data = ngx_pnalloc(ctx->request->pool, NGX_SOCKADDR_STRLEN);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    text->len = ngx_sock_ntop(addr.sockaddr, addr.socklen, text->data,
                              NGX_SOCKADDR_STRLEN, 0);

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_unlock_body(ngx_xmpp_admin_ctx_t *ctx, json_t *body)
{
    time_t               left;
    json_t              *login, *address;
    ngx_str_t            name;
    ngx_uint_t           failures;
    const char          *what;
    ngx_http_request_t  *r;

    r = ctx->request;

    login = body ? json_object_get(body, "login") : NULL;
    address = body ? json_object_get(body, "address") : NULL;

    /* one of the two, and nothing else */
    if (body == NULL || json_object_size(body) != 1
        || !(json_is_string(login) || json_is_string(address)))
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST, "bad-request");
    }

    what = login ? "login" : "address";

    if ((login ? ngx_xmpp_admin_unlock_login(ctx, login, &name)
               : ngx_xmpp_admin_unlock_address(ctx, address, &name))
        != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST, "bad-request");
    }

    if (ngx_xmpp_auth_unlock(ctx->xcf, login ? &name : NULL,
                             login ? NULL : &name, 0, &failures, &left)
        == NGX_DECLINED)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_CONFLICT, "lockouts-off");
    }

    /* recorded first: an action that cannot be recorded does not happen */
    if (ngx_xmpp_admin_audit(ctx, "unlock", 1, NULL,
                             json_pack("{ss#sIsI}", what, name.data,
                                       (int) name.len, "failures",
                                       (json_int_t) failures, "locked_for",
                                       (json_int_t) left))
        != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    (void) ngx_xmpp_auth_unlock(ctx->xcf, login ? &name : NULL,
                                login ? NULL : &name, 1, &failures, &left);

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "xmpp: console: \"%s\" clears the sign-in failures of "
                  "%s \"%V\" (%ui, locked for %T s)", ctx->sess.user, what,
                  &name, failures, left);

    return ngx_xmpp_admin_send_json(r, NGX_HTTP_OK,
                                    json_pack("{ss#sIsI}", what, name.data,
                                              (int) name.len, "failures",
                                              (json_int_t) failures,
                                              "locked_for",
                                              (json_int_t) left));
}


/*
 * POST unlock {"login"} or {"address"}: an XMPP sign-in lockout ends
 * now, and its count starts again from zero (README "Sign-in lockout")
 */
ngx_int_t
ngx_xmpp_admin_unlock(ngx_xmpp_admin_ctx_t *ctx)
{
    return ngx_xmpp_admin_read_json(ctx, ngx_xmpp_admin_unlock_body);
}


/* GET status: sessions, the audit pipeline, the database adapter */
ngx_int_t
ngx_xmpp_admin_status(ngx_xmpp_admin_ctx_t *ctx)
{
    json_t                     *doc, *list, *db;
    const ngx_xmpp_db_stats_t  *st;

    list = ngx_xmpp_registry_sessions(ctx->xcf);

    doc = json_object();
    if (doc == NULL || list == NULL) {
        json_decref(list);
        json_decref(doc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_object_set_new(doc, "sessions", json_integer(json_array_size(list)));
    json_decref(list);

    json_object_set_new(doc, "audit", ngx_xmpp_audit_json(ctx->xcf));
    json_object_set_new(doc, "console", json_pack("{sI}", "forged_cookies",
                        (json_int_t) ngx_xmpp_metrics_console_forged_total()));
    json_object_set_new(doc, "metrics", ngx_xmpp_metrics_status_json());
    json_object_set_new(doc, "time", json_integer(ngx_time()));

    st = ngx_xmpp_db_stats();

    if (st) {
        db = json_pack("{sIsIsIsIsIsI}",
                       "requests", (json_int_t) st->requests,
                       "timeouts", (json_int_t) st->timeouts,
                       "errors", (json_int_t) st->errors,
                       "statement_timeouts",
                       (json_int_t) st->statement_timeouts,
                       "connect_errors", (json_int_t) st->connect_errors,
                       "max_ms", (json_int_t) st->max_ms);
        json_object_set_new(doc, "database_this_worker",
                            db ? db : json_null());
    }

    return ngx_xmpp_admin_send_json(ctx->request, NGX_HTTP_OK, doc);
}
