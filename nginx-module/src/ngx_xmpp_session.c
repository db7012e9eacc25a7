
/*
 * Session lifecycle independent of the transport: creation, the table
 * of this worker's sessions, output with a bounded backlog, stream
 * errors, graceful and hard close.
 *
 * Closing is two-phase.  ngx_xmpp_session_close() ends the stream
 * (presence, registry) and asks the transport to send its stream end;
 * ngx_xmpp_session_finalize() releases the connection.  Finalizing
 * while libxml2 is inside the session's parser is deferred until the
 * parser returns (in_feed), and I/O errors found while writing to some
 * other session only mark it and post its read event, so no session is
 * freed under a caller that still walks it.
 */


#include "ngx_xmpp.h"


static void ngx_xmpp_session_timer_handler(ngx_event_t *ev);
static void ngx_xmpp_session_detach(ngx_xmpp_session_t *s);
static void ngx_xmpp_session_pool_cleanup(void *data);
static void ngx_xmpp_session_reset(ngx_connection_t *c);
static void ngx_xmpp_session_io_error(ngx_xmpp_session_t *s);
static void ngx_xmpp_session_flush_corked(ngx_event_t *ev);


/* ngx_xmpp_session_cork(): sessions written to while corked, by id */
#define NGX_XMPP_CORK_MAX  4096

static ngx_uint_t         ngx_xmpp_session_corked;
static uint64_t           ngx_xmpp_session_corks[NGX_XMPP_CORK_MAX];
static ngx_uint_t         ngx_xmpp_session_ncorks;
static ngx_event_t        ngx_xmpp_session_uncorked;

static ngx_rbtree_t       ngx_xmpp_sessions;
static ngx_rbtree_node_t  ngx_xmpp_sessions_sentinel;
static uint64_t           ngx_xmpp_session_next_id;
static ngx_uint_t         ngx_xmpp_session_n;


ngx_xmpp_session_t *
ngx_xmpp_session_create(ngx_connection_t *c, ngx_pool_t *pool,
    ngx_xmpp_conf_t *xcf, ngx_xmpp_transport_t *t, void *data)
{
    uint32_t             r[2];
    ngx_pool_cleanup_t  *cln;
    ngx_xmpp_session_t  *s;

    if (ngx_xmpp_sessions.root == NULL) {
        ngx_rbtree_init(&ngx_xmpp_sessions, &ngx_xmpp_sessions_sentinel,
                        ngx_rbtree_insert_value);
    }

    s = ngx_pcalloc(pool, sizeof(ngx_xmpp_session_t));
    if (s == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    s->connection = c;
    s->pool = pool;
    s->conf = xcf;
    s->transport = t;
    s->transport_data = data;
    s->out.max = xcf->max_output;
    s->state = NGX_XMPP_ST_WAIT_OPEN;

    s->id = ++ngx_xmpp_session_next_id;
    s->node.key = (ngx_rbtree_key_t) s->id;
    ngx_rbtree_insert(&ngx_xmpp_sessions, &s->node);
    ngx_xmpp_session_n++;

    cln->handler = ngx_xmpp_session_pool_cleanup;
    cln->data = s;

    r[0] = (uint32_t) ngx_random();
    r[1] = (uint32_t) ngx_random();
    ngx_hex_dump(s->stream_id, (u_char *) r, sizeof(r));

    if (ngx_xmpp_audit_session_init(s) != NGX_OK) {
        return NULL;
    }

    ngx_xmpp_session_tls_mode(c);

    /* debug logging reads ev->data as a connection */
    s->timer.handler = ngx_xmpp_session_timer_handler;
    s->timer.data = c;
    s->timer.log = c->log;

    return s;
}


/* the client has this long to authenticate and bind (slowloris) */
ngx_int_t
ngx_xmpp_session_start(ngx_xmpp_session_t *s)
{
    ngx_add_timer(&s->timer, s->conf->auth_timeout);
    return NGX_OK;
}


ngx_int_t
ngx_xmpp_session_input(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_int_t  rc;

    if (s->finalized || s->close_pending) {
        return NGX_ERROR;
    }

    s->in_feed = 1;
    rc = ngx_xmpp_parser_feed(s, data, len);
    s->in_feed = 0;

    if (s->finalized) {
        /* a finalize was asked for during the feed: do it now */
        s->finalized = 0;
        ngx_xmpp_session_finalize(s);
        return NGX_DONE;
    }

    return rc;
}


/*
 * A write that TLS could not take whole waits in the session's backlog
 * and is retried from there, not from the caller's buffer: OpenSSL must
 * be told the same bytes may come from another address.
 */
void
ngx_xmpp_session_tls_mode(ngx_connection_t *c)
{
#if (NGX_SSL)
    if (c->ssl && c->ssl->connection) {
        SSL_set_mode(c->ssl->connection, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif
}


ngx_xmpp_session_t *
ngx_xmpp_session_find(uint64_t id)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_xmpp_sessions.root == NULL) {
        return NULL;
    }

    key = (ngx_rbtree_key_t) id;
    node = ngx_xmpp_sessions.root;
    sentinel = ngx_xmpp_sessions.sentinel;

    while (node != sentinel) {
        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        return (ngx_xmpp_session_t *) node;
    }

    return NULL;
}


/*
 * This worker's sessions in id order: NULL starts, NULL ends.  The
 * caller must not close sessions while walking (collect ids, then act).
 */
ngx_xmpp_session_t *
ngx_xmpp_session_next(ngx_xmpp_session_t *s)
{
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_xmpp_sessions.root == NULL) {
        return NULL;
    }

    sentinel = ngx_xmpp_sessions.sentinel;

    if (s == NULL) {
        if (ngx_xmpp_sessions.root == sentinel) {
            return NULL;
        }

        node = ngx_rbtree_min(ngx_xmpp_sessions.root, sentinel);

    } else {
        node = ngx_rbtree_next(&ngx_xmpp_sessions, &s->node);
    }

    return (ngx_xmpp_session_t *) node;
}


ngx_uint_t
ngx_xmpp_session_count(void)
{
    return ngx_xmpp_session_n;
}


/*
 * Writes raw transport bytes: directly when nothing is queued, and the
 * rest into the session's backlog, which may not grow past max_output.
 */
ngx_int_t
ngx_xmpp_session_writev(ngx_xmpp_session_t *s, u_char *d1, size_t l1,
    u_char *d2, size_t l2)
{
    off_t              sent;
    size_t             n;
    ngx_buf_t          b1, b2;
    ngx_uint_t         listed;
    ngx_chain_t        c1, c2, *cl;
    ngx_connection_t  *c;

    c = s->connection;

    if (s->finalized || c->error) {
        return NGX_ERROR;
    }

    n = 0;
    listed = 0;

    if (s->out.last == s->out.start && ngx_xmpp_session_corked
        && s->state == NGX_XMPP_ST_SESSION
        && ngx_xmpp_session_ncorks < NGX_XMPP_CORK_MAX)
    {
        /* corked: queued now, one send per session when it uncorks */
        ngx_xmpp_session_corks[ngx_xmpp_session_ncorks++] = s->id;
        listed = 1;

    } else if (s->out.last == s->out.start) {
        ngx_memzero(&b1, sizeof(ngx_buf_t));
        ngx_memzero(&b2, sizeof(ngx_buf_t));

        b1.pos = d1;
        b1.last = d1 + l1;
        b1.memory = 1;
        b2.pos = d2;
        b2.last = d2 + l2;
        b2.memory = 1;

        /* TLS connections buffer until a flush (ngx_ssl_send_chain) */
        b1.flush = (l2 == 0);
        b2.flush = 1;

        c1.buf = &b1;
        c1.next = l2 ? &c2 : NULL;
        c2.buf = &b2;
        c2.next = NULL;

        sent = c->sent;
        cl = c->send_chain(c, &c1, 0);

        if (cl == NGX_CHAIN_ERROR) {
            ngx_xmpp_session_io_error(s);
            return NGX_ERROR;
        }

        n = (size_t) (c->sent - sent);

        if (n == l1 + l2) {
            return NGX_OK;
        }
    }

    if (n < l1) {
        ngx_xmpp_wbuf_add(&s->out, d1 + n, l1 - n);
        ngx_xmpp_wbuf_add(&s->out, d2, l2);

    } else {
        ngx_xmpp_wbuf_add(&s->out, d2 + (n - l1), l2 - (n - l1));
    }

    if (s->out.failed) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: output backlog over %uz bytes, "
                      "closing slow client", s->conf->max_output);

        /*
         * Reset rather than close: what the kernel still holds for this
         * client would otherwise trickle out for as long as it dawdles.
         */
        ngx_xmpp_session_reset(c);
        ngx_xmpp_session_io_error(s);
        return NGX_ERROR;
    }

    /*
     * Only a session on the cork list is sent by the uncork.  One written
     * directly while a cork is open (the list is full, or it is not yet
     * signed in) may have just hit EAGAIN: without the write event its
     * backlog would wait for its next write.
     */
    if (listed) {
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_xmpp_session_io_error(s);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A fan-out (a room's jobs, a batch of inter-worker datagrams) writes
 * many stanzas, often several to one session: between cork and uncork
 * they only queue.  The outermost uncork does not send: it posts an
 * event that sends each corked session's queue with one send() at the
 * end of the event-loop turn, so that every fan-out of the turn (one
 * per room message a group commit made durable, one per batch of
 * datagrams) shares it.  One send per room message per occupant made
 * the kernel's TCP path 80% of a worker's time (docs/benchmarks.md,
 * "MUC fan-out").  Sessions are kept by id: one that ends meanwhile is
 * simply not found.
 */
void
ngx_xmpp_session_cork(void)
{
    ngx_xmpp_session_corked++;
}


void
ngx_xmpp_session_uncork(void)
{
    ngx_event_t  *ev;

    if (ngx_xmpp_session_corked == 0 || --ngx_xmpp_session_corked) {
        return;
    }

    ev = &ngx_xmpp_session_uncorked;

    if (ngx_xmpp_session_ncorks == 0 || ev->posted) {
        return;
    }

    ev->handler = ngx_xmpp_session_flush_corked;
    ev->log = ngx_cycle->log;
    ngx_post_event(ev, &ngx_posted_events);
}


static void
ngx_xmpp_session_flush_corked(ngx_event_t *ev)
{
    ngx_uint_t           i;
    ngx_xmpp_session_t  *s;

    if (ngx_xmpp_session_corked) {
        /* a cork is open: its uncork posts this again */
        return;
    }

    for (i = 0; i < ngx_xmpp_session_ncorks; i++) {
        s = ngx_xmpp_session_find(ngx_xmpp_session_corks[i]);

        if (s == NULL || s->finalized || s->connection->error
            || s->out.last == s->out.start)
        {
            continue;
        }

        if (ngx_xmpp_session_flush(s) == NGX_ERROR) {
            ngx_xmpp_session_io_error(s);
        }
    }

    ngx_xmpp_session_ncorks = 0;
}


/* the worker exits: what is corked goes now */
void
ngx_xmpp_session_exit_worker(void)
{
    ngx_xmpp_session_corked = 0;

    if (ngx_xmpp_session_uncorked.posted) {
        ngx_delete_posted_event(&ngx_xmpp_session_uncorked);
        ngx_xmpp_session_flush_corked(&ngx_xmpp_session_uncorked);
    }
}


ngx_int_t
ngx_xmpp_session_write(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    return ngx_xmpp_session_writev(s, data, len, NULL, 0);
}


/* the write handler's half: drains the backlog */
ngx_int_t
ngx_xmpp_session_flush(ngx_xmpp_session_t *s)
{
    size_t             left;
    ssize_t            n;
    ngx_connection_t  *c;

    c = s->connection;

    while (s->out.last > s->out.start) {
        n = c->send(c, s->out.start, s->out.last - s->out.start);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return NGX_ERROR;
            }

            return NGX_AGAIN;
        }

        if (n == NGX_ERROR || n == 0) {
            return NGX_ERROR;
        }

        left = (s->out.last - s->out.start) - n;
        ngx_memmove(s->out.start, s->out.start + n, left);
        s->out.last = s->out.start + left;
    }

    /* an idle session gives its output memory back */
    ngx_xmpp_wbuf_free(&s->out);

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_session_send(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    if (s->finalized || s->state == NGX_XMPP_ST_CLOSING) {
        return NGX_ERROR;
    }

    if (s->transport->send(s, data, len) != NGX_OK) {
        /*
         * XEP-0198: a connection that failed (c->error; the session
         * ends from a posted event) still takes stanzas into the
         * unacked queue, which the session's end parks or handles as
         * undeliverable; dropped here, a stanza routed to it in that
         * turn was neither sent nor kept.
         */
        if (!ngx_xmpp_sm_enabled(s) || !s->connection->error) {
            return NGX_ERROR;
        }

        ngx_log_debug0(NGX_LOG_DEBUG_CORE, s->connection->log, 0,
                       "xmpp: stanza kept after the connection failed");
    }

    if (s->sm) {
        /* XEP-0198: counted, and kept until the client acks it */
        ngx_xmpp_sm_sent(s, data, len);
    }

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_session_send_wbuf(ngx_xmpp_session_t *s, ngx_xmpp_wbuf_t *b)
{
    if (b->failed) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: could not build a stanza");
        return NGX_ERROR;
    }

    return ngx_xmpp_session_send(s, b->start, b->last - b->start);
}


/* RFC 6120 section 4.9: the error, then the stream end */
void
ngx_xmpp_session_error(ngx_xmpp_session_t *s, const char *condition,
    const char *text)
{
    ngx_xmpp_wbuf_t   b;
    ngx_xmpp_state_e  st;

    if (s->finalized || s->state == NGX_XMPP_ST_CLOSING) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: stream error <%s/>%s%s", condition,
                  text ? ": " : "", text ? text : "");

    if (s->end_reason == NULL) {
        s->end_reason = condition;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 4096;

    ngx_xmpp_wbuf_lit(&b, "<stream:error xmlns:stream='"
                      NGX_XMPP_NS_STREAM "'><");
    ngx_xmpp_wbuf_str(&b, condition);
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_STREAMS "'/>");

    if (text) {
        ngx_xmpp_wbuf_lit(&b, "<text xmlns='" NGX_XMPP_NS_STREAMS
                          "' xml:lang='en'>");
        ngx_xmpp_wbuf_esc(&b, (u_char *) text, ngx_strlen(text));
        ngx_xmpp_wbuf_lit(&b, "</text>");
    }

    ngx_xmpp_wbuf_lit(&b, "</stream:error>");

    /* the error goes now, before the end of the stream, never corked */
    if (s->out.last > s->out.start) {
        (void) ngx_xmpp_session_flush(s);
    }

    if (!b.failed) {
        /* CLOSING for a moment: the write is not corked */
        st = s->state;
        s->state = NGX_XMPP_ST_CLOSING;
        (void) s->transport->send(s, b.start, b.last - b.start);
        s->state = st;
    }
    ngx_xmpp_wbuf_free(&b);

    ngx_xmpp_session_close(s);
}


/* ends the stream gracefully; the transport finalizes later */
void
ngx_xmpp_session_close(ngx_xmpp_session_t *s)
{
    if (s->finalized || s->state == NGX_XMPP_ST_CLOSING) {
        return;
    }

    ngx_xmpp_session_detach(s);

    s->state = NGX_XMPP_ST_CLOSING;
    s->close_pending = 1;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_add_timer(&s->timer, s->conf->close_timeout);

    s->transport->end(s);
}


void
ngx_xmpp_session_finalize(ngx_xmpp_session_t *s)
{
    if (s->finalized) {
        return;
    }

    s->finalized = 1;

    if (s->in_feed) {
        /* ngx_xmpp_session_input() finishes the job */
        xmlStopParser(s->parser);
        return;
    }

    ngx_xmpp_session_detach(s);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    s->transport->finalize(s);
}


/* the end of the session for everyone else: runs once */
static void
ngx_xmpp_session_detach(ngx_xmpp_session_t *s)
{
    if (s->node.key == 0) {
        return;
    }

    ngx_xmpp_auth_cancel(s);

    ngx_xmpp_audit_session_end(s);

    if (s->bound) {
        /* XEP-0198: a resumable session keeps its presence and entry */
        if (ngx_xmpp_sm_detach(s) != NGX_OK) {
            ngx_xmpp_presence_gone(s);
            ngx_xmpp_registry_remove(s);
        }

        ngx_xmpp_metrics_session(s, -1);
        s->bound = 0;
    }

    ngx_xmpp_sm_release(s);

    ngx_rbtree_delete(&ngx_xmpp_sessions, &s->node);
    s->node.key = 0;
    ngx_xmpp_session_n--;
}


static void
ngx_xmpp_session_pool_cleanup(void *data)
{
    ngx_xmpp_session_t  *s = data;

    ngx_xmpp_session_detach(s);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_xmpp_wbuf_free(&s->out);
}


static void
ngx_xmpp_session_reset(ngx_connection_t *c)
{
    struct linger  linger;

    linger.l_onoff = 1;
    linger.l_linger = 0;

    if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, (const void *) &linger,
                   sizeof(struct linger))
        == -1)
    {
        ngx_log_error(NGX_LOG_ERR, c->log, ngx_socket_errno,
                      "setsockopt(SO_LINGER) failed");
    }
}


static void
ngx_xmpp_session_io_error(ngx_xmpp_session_t *s)
{
    ngx_connection_t  *c;

    c = s->connection;
    c->error = 1;

    if (s->end_reason == NULL) {
        s->end_reason = "connection-lost";
    }

    /* the transport's read handler sees c->error and finalizes */
    ngx_post_event(c->read, &ngx_posted_events);
}


static void
ngx_xmpp_session_timer_handler(ngx_event_t *ev)
{
    ngx_xmpp_session_t  *s;
    cdir_auth_result_t   res;

    s = (ngx_xmpp_session_t *) ((u_char *) ev
                                - offsetof(ngx_xmpp_session_t, timer));

    if (s->state == NGX_XMPP_ST_CLOSING) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: peer did not close the stream in time");
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (s->state == NGX_XMPP_ST_AUTH_PENDING) {
        /* the directory is slow or dead: RFC 6120 section 6.5.12 */
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: LDAP did not answer within %M ms",
                      s->conf->ldap_timeout);
        ngx_xmpp_auth_cancel(s);

        ngx_memzero(&res, sizeof(cdir_auth_result_t));
        res.status = CDIR_UNAVAILABLE;
        ngx_cpystrn((u_char *) res.reason, (u_char *) "timeout",
                    sizeof(res.reason));

        ngx_xmpp_stream_auth_done(s, &res);
        return;
    }

    if (s->state != NGX_XMPP_ST_SESSION) {
        ngx_xmpp_session_error(s, "connection-timeout",
                               "authentication took too long");
    }
}


/* graceful worker shutdown: tell every client (RFC 6120 4.9.3.17) */
void
ngx_xmpp_session_shutdown_all(const char *condition)
{
    ngx_uint_t          n;
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_xmpp_sessions.root == NULL) {
        return;
    }

    sentinel = ngx_xmpp_sessions.sentinel;

    /* each session leaves the table as it closes; n guards the loop */
    for (n = ngx_xmpp_session_n; n && ngx_xmpp_sessions.root != sentinel;
         n--)
    {
        node = ngx_rbtree_min(ngx_xmpp_sessions.root, sentinel);
        ngx_xmpp_session_error((ngx_xmpp_session_t *) node, condition, NULL);
    }
}
