
/*
 * XEP-0055 user search against the directory, served at the server's
 * own JID (advertised in its disco#info).
 *
 * A get returns the form: the legacy fields (first, last, nick, email;
 * XEP-0055 section 2.1) and a data form (section 3) that adds
 * "department".  A set runs cdir_search_users() in the thread pool:
 * every field given is a prefix match on its attribute, RFC 4515-
 * escaped, so no input widens the filter; at most
 * conclave_ldap_search_max users are returned.  The answer follows the
 * request's style (legacy items or a data form result).  A query with
 * no field, or a field over 64 bytes, is <not-acceptable/>; a directory
 * that does not answer gives <remote-server-timeout/> (wait).  The task
 * owns its memory; a session gone meanwhile just drops the answer.
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_NS_SEARCH  "jabber:iq:search"
#define NGX_XMPP_NS_XDATA   "jabber:x:data"
#define NGX_XMPP_SEARCH_OUT_MAX  (512 * 1024)


typedef struct {
    uint64_t               sid;
    cdir_t                *dir;
    ngx_uint_t             max;
    ngx_uint_t             form;         /* answer with a data form */
    ngx_str_t              domain;
    ngx_int_t              found;        /* -1: failed */
    ngx_xmpp_wbuf_t        items;        /* the <item/>s, built in the task */
    char                   err[256];
    char                   field[5][CDIR_MAX_QUERY + 1];
    u_char                 id[256];
    size_t                 id_len;
} ngx_xmpp_search_t;


static const char  *ngx_xmpp_search_vars[5] = {
    "first", "last", "nick", "email", "department"
};


static void ngx_xmpp_search_form(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st);
static ngx_int_t ngx_xmpp_search_fields(ngx_xmpp_node_t *q,
    ngx_xmpp_search_t *ctx);
static ngx_int_t ngx_xmpp_search_field(ngx_xmpp_search_t *ctx,
    ngx_str_t *var, ngx_str_t *value);
static void ngx_xmpp_search_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_search_item(void *data, const cdir_user_t *u);
static void ngx_xmpp_search_done(ngx_event_t *ev);
static void ngx_xmpp_search_reply(ngx_xmpp_session_t *s,
    ngx_xmpp_search_t *ctx);


void
ngx_xmpp_search_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_node_t     *q;
    ngx_thread_task_t   *task;
    ngx_xmpp_search_t   *ctx;

    if (st->type.len == 3 && ngx_strncmp(st->type.data, "get", 3) == 0) {
        ngx_xmpp_search_form(s, st);
        return;
    }

    if (s->conf->dir == NULL || s->conf->thread_pool == NULL
        || st->id.len > sizeof(ctx->id))
    {
        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return;
    }

    /* on the heap: the session may end before the directory answers */
    task = ngx_calloc(sizeof(ngx_thread_task_t) + sizeof(ngx_xmpp_search_t),
                      s->connection->log);
    if (task == NULL) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
        return;
    }

    ctx = (ngx_xmpp_search_t *) (task + 1);
    q = ngx_xmpp_node_first_element(st->node);

    if (ngx_xmpp_search_fields(q, ctx) != NGX_OK) {
        ngx_free(task);
        ngx_xmpp_router_error(s, st, "modify", "not-acceptable");
        return;
    }

    ctx->sid = s->id;
    ctx->dir = s->conf->dir;
    ctx->max = s->conf->ldap_search_max;
    ctx->domain = s->conf->domain;
    ctx->items.max = NGX_XMPP_SEARCH_OUT_MAX;
    ngx_memcpy(ctx->id, st->id.data, st->id.len);
    ctx->id_len = st->id.len;

    task->ctx = ctx;
    task->handler = ngx_xmpp_search_thread;
    task->event.handler = ngx_xmpp_search_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(s->conf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
    }
}


/* XEP-0055 sections 2.1 and 3.1: instructions, fields, a form */
static void
ngx_xmpp_search_form(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_uint_t        i;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");
    ngx_xmpp_wbuf_nstr(b, &s->conf->domain);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &st->id);
    ngx_xmpp_wbuf_lit(b, "'><query xmlns='" NGX_XMPP_NS_SEARCH "'>"
                      "<instructions>Find colleagues in the company "
                      "directory: each field matches the start of a "
                      "name.</instructions>"
                      "<first/><last/><nick/><email/>"
                      "<x xmlns='" NGX_XMPP_NS_XDATA "' type='form'>"
                      "<title>Company directory</title>"
                      "<field type='hidden' var='FORM_TYPE'><value>"
                      NGX_XMPP_NS_SEARCH "</value></field>");

    for (i = 0; i < 5; i++) {
        ngx_xmpp_wbuf_lit(b, "<field type='text-single' var='");
        ngx_xmpp_wbuf_str(b, ngx_xmpp_search_vars[i]);
        ngx_xmpp_wbuf_lit(b, "'/>");
    }

    ngx_xmpp_wbuf_lit(b, "</x></query></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* the legacy children or a submitted data form */
static ngx_int_t
ngx_xmpp_search_fields(ngx_xmpp_node_t *q, ngx_xmpp_search_t *ctx)
{
    ngx_str_t         text, *var;
    ngx_uint_t        n;
    ngx_xmpp_node_t  *c, *v, *x;

    n = 0;

    if (q == NULL) {
        return NGX_ERROR;
    }

    x = ngx_xmpp_node_child(q, "x", NGX_XMPP_NS_XDATA);

    if (x != NULL) {
        ctx->form = 1;

        for (c = x->child; c; c = c->next) {
            if (c->name.len != 5 || ngx_strncmp(c->name.data, "field", 5))
            {
                continue;
            }

            var = ngx_xmpp_node_attr(c, "var");
            v = ngx_xmpp_node_child(c, "value", NGX_XMPP_NS_XDATA);

            if (var == NULL || v == NULL || v->child == NULL) {
                continue;
            }

            text = v->child->text;

            if (ngx_xmpp_search_field(ctx, var, &text) != NGX_OK) {
                return NGX_ERROR;
            }
        }

    } else {
        for (c = q->child; c; c = c->next) {
            if (c->name.len == 0 || c->child == NULL) {
                continue;
            }

            if (ngx_xmpp_search_field(ctx, &c->name, &c->child->text)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    for (n = 0; n < 5; n++) {
        if (ctx->field[n][0]) {
            return NGX_OK;
        }
    }

    /* no criteria: not a way to list the whole directory */
    return NGX_ERROR;
}


static ngx_int_t
ngx_xmpp_search_field(ngx_xmpp_search_t *ctx, ngx_str_t *var,
    ngx_str_t *value)
{
    ngx_uint_t  i;

    for (i = 0; i < 5; i++) {
        if (var->len == ngx_strlen(ngx_xmpp_search_vars[i])
            && ngx_strncmp(var->data, ngx_xmpp_search_vars[i], var->len)
               == 0)
        {
            break;
        }
    }

    if (i == 5 || value->len == 0) {
        return NGX_OK;                    /* FORM_TYPE, unknown, empty */
    }

    if (value->len > CDIR_MAX_QUERY) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->field[i], value->data, value->len);
    ctx->field[i][value->len] = '\0';

    return NGX_OK;
}


/* in a pool thread */
static void
ngx_xmpp_search_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_search_t  *ctx = data;

    cdir_query_t  q;

    q.first = ctx->field[0];
    q.last = ctx->field[1];
    q.nick = ctx->field[2];
    q.email = ctx->field[3];
    q.department = ctx->field[4];

    ctx->found = cdir_search_users(ctx->dir, &q, (int) ctx->max,
                                   ngx_xmpp_search_item, ctx, ctx->err,
                                   sizeof(ctx->err));
}


#define ngx_xmpp_search_put(b, tag, v)                                       \
    if ((v)[0]) {                                                            \
        ngx_xmpp_wbuf_lit(b, "<" tag ">");                                   \
        ngx_xmpp_wbuf_esc(b, (u_char *) (v), ngx_strlen(v));                 \
        ngx_xmpp_wbuf_lit(b, "</" tag ">");                                  \
    }

#define ngx_xmpp_search_cell(b, var, v)                                      \
    ngx_xmpp_wbuf_lit(b, "<field var='" var "'><value>");                    \
    ngx_xmpp_wbuf_esc(b, (u_char *) (v), ngx_strlen(v));                     \
    ngx_xmpp_wbuf_lit(b, "</value></field>")


/* one result; the task's own buffer (ngx_alloc, so thread-safe) */
static void
ngx_xmpp_search_item(void *data, const cdir_user_t *u)
{
    ngx_xmpp_search_t  *ctx = data;

    u_char            *p, jid[CDIR_MAX_LOGIN + 256];
    size_t             len;
    ngx_xmpp_wbuf_t   *b;

    len = ngx_strlen(u->name);

    /* the same rule as at sign-in: a valid localpart, lower case */
    if (!ngx_xmpp_jid_local_valid((u_char *) u->name, len)
        || len + 1 + ctx->domain.len > sizeof(jid))
    {
        return;
    }

    p = ngx_cpymem(jid, u->name, len);
    ngx_xmpp_ascii_lower(jid, len);
    *p++ = '@';
    p = ngx_cpymem(p, ctx->domain.data, ctx->domain.len);
    *p = '\0';

    b = &ctx->items;

    if (ctx->form) {
        ngx_xmpp_wbuf_lit(b, "<item>");
        ngx_xmpp_search_cell(b, "jid", jid);
        ngx_xmpp_search_cell(b, "first", u->first);
        ngx_xmpp_search_cell(b, "last", u->last);
        ngx_xmpp_search_cell(b, "nick", u->display);
        ngx_xmpp_search_cell(b, "email", u->email);
        ngx_xmpp_search_cell(b, "department", u->department);
        ngx_xmpp_wbuf_lit(b, "</item>");
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<item jid='");
    ngx_xmpp_wbuf_esc(b, jid, p - jid);
    ngx_xmpp_wbuf_lit(b, "'>");
    ngx_xmpp_search_put(b, "first", u->first);
    ngx_xmpp_search_put(b, "last", u->last);
    ngx_xmpp_search_put(b, "nick", u->display);
    ngx_xmpp_search_put(b, "email", u->email);
    ngx_xmpp_wbuf_lit(b, "</item>");
}


static void
ngx_xmpp_search_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_xmpp_session_t  *s;
    ngx_xmpp_search_t   *ctx;

    ctx = task->ctx;
    s = ngx_xmpp_session_find(ctx->sid);

    if (s && !s->finalized && s->state == NGX_XMPP_ST_SESSION) {
        ngx_xmpp_search_reply(s, ctx);
    }

    ngx_xmpp_wbuf_free(&ctx->items);
    ngx_free(task);
}


static void
ngx_xmpp_search_reply(ngx_xmpp_session_t *s, ngx_xmpp_search_t *ctx)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(NGX_XMPP_SEARCH_OUT_MAX + 4096);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' from='");
    ngx_xmpp_wbuf_nstr(b, &s->conf->domain);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_esc(b, ctx->id, ctx->id_len);

    if (ctx->found < 0 || ctx->items.failed) {
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: user search by \"%V\" failed: %s", &s->user,
                      ctx->items.failed ? "result too large" : ctx->err);

        ngx_xmpp_wbuf_lit(b, "' type='error'><error type='wait'>"
                          "<remote-server-timeout xmlns='"
                          NGX_XMPP_NS_STANZAS "'/></error></iq>");
        (void) ngx_xmpp_session_send_wbuf(s, b);
        return;
    }

    ngx_xmpp_wbuf_lit(b, "' type='result'><query xmlns='"
                      NGX_XMPP_NS_SEARCH "'>");

    if (ctx->form) {
        ngx_xmpp_wbuf_lit(b, "<x xmlns='" NGX_XMPP_NS_XDATA "' type='result'>"
                          "<field type='hidden' var='FORM_TYPE'><value>"
                          NGX_XMPP_NS_SEARCH "</value></field><reported>"
                          "<field var='jid' type='jid-single'/>"
                          "<field var='first'/><field var='last'/>"
                          "<field var='nick'/><field var='email'/>"
                          "<field var='department'/></reported>");
    }

    if (ctx->items.start) {
        ngx_xmpp_wbuf_add(b, ctx->items.start,
                          ctx->items.last - ctx->items.start);
    }

    ngx_xmpp_wbuf_str(b, ctx->form ? "</x></query></iq>" : "</query></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}
