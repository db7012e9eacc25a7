
/*
 * TLS 1.3 after the handshake without OpenSSL's per-connection state.
 *
 * OpenSSL does the whole handshake, as nginx configures it.  Once it is
 * done, a TLS 1.3 connection with one of the three AEAD suites of RFC
 * 8446 is handed to our record layer (ngx_xmpp_tlsrec.c) and its SSL
 * object is freed: 14 KiB of OpenSSL state become ~300 bytes of keys,
 * IVs, sequence numbers and traffic secrets (docs/benchmarks.md,
 * "Transports").  The secrets come from the key log callback.
 *
 * Sequence numbers start at 0 only if nothing was sent or read under
 * the application keys before the hand-over, so the contexts of ports
 * that hand over send no NewSessionTicket (num_tickets 0: no TLS 1.3
 * resumption there) and read no record ahead; and a connection with a
 * byte pending inside OpenSSL, TLS 1.2 or another suite stays on
 * OpenSSL, as before.
 *
 * Buffers exist only while needed: a partial incoming record, plaintext
 * the caller had no room for, ciphertext the kernel did not take.  The
 * work buffers are the worker's.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_xmpp.h"
#include "ngx_xmpp_tlsrec.h"


struct ngx_xmpp_tls_s {
    ngx_xmpp_tlsrec_t      rec;
    u_char                *in;        /* ciphertext carried over */
    size_t                 in_len;
    u_char                *pt;        /* plaintext not yet taken */
    size_t                 pt_pos;
    size_t                 pt_len;
    u_char                *out;       /* ciphertext not yet sent */
    size_t                 out_pos;
    size_t                 out_len;
    size_t                 secret_len;
    unsigned               have_client:1;
    unsigned               have_server:1;
    unsigned               eof:1;
    unsigned               failed:1;   /* an alert went or came: 6.2 */
};


static void ngx_xmpp_tls_keylog(const SSL *ssl, const char *line);
static void ngx_xmpp_tls_cleanup(void *data);
static ssize_t ngx_xmpp_tls_recv(ngx_connection_t *c, u_char *buf,
    size_t size);
static ssize_t ngx_xmpp_tls_read_records(ngx_connection_t *c,
    ngx_xmpp_tls_t *tls, u_char *buf, size_t size);
static ssize_t ngx_xmpp_tls_fill(ngx_connection_t *c, ngx_xmpp_tls_t *tls,
    size_t *len, size_t *pos);
static ngx_int_t ngx_xmpp_tls_carry(ngx_connection_t *c, u_char **dst,
    size_t *dst_len, u_char *src, size_t len);
static void ngx_xmpp_tls_fatal(ngx_connection_t *c, ngx_xmpp_tls_t *tls,
    uint8_t alert);
static ssize_t ngx_xmpp_tls_recv_chain(ngx_connection_t *c,
    ngx_chain_t *in, off_t limit);
static ssize_t ngx_xmpp_tls_send(ngx_connection_t *c, u_char *buf,
    size_t size);
static ngx_chain_t *ngx_xmpp_tls_send_chain(ngx_connection_t *c,
    ngx_chain_t *in, off_t limit);
static ngx_int_t ngx_xmpp_tls_write(ngx_connection_t *c, ngx_xmpp_tls_t *tls,
    u_char *data, size_t len);


static ngx_int_t ngx_xmpp_tls_unhex(u_char *dst, const char *src,
    size_t len);
static const char *ngx_xmpp_tls_alert_name(uint8_t alert);


static int  ngx_xmpp_tls_index = -1;

/* two records of input: a whole one fits whatever was carried over */
static u_char  ngx_xmpp_tls_ibuf[2 * NGX_XMPP_TLSREC_MAX];
/* our KeyUpdate and one full record */
static u_char  ngx_xmpp_tls_obuf[NGX_XMPP_TLSREC_KU_LEN
                                 + NGX_XMPP_TLSREC_SEALED(
                                       NGX_XMPP_TLSREC_PLAIN)];


/*
 * Configuration: makes an SSL_CTX of an XMPP port hand its TLS 1.3
 * connections over.  A key log callback that someone else set (nginx
 * 1.22 sets none) is left alone, and that port stays on OpenSSL.
 */
ngx_int_t
ngx_xmpp_tls_prepare(ngx_conf_t *cf, SSL_CTX *ctx)
{
    if (ngx_xmpp_tls_index == -1) {
        ngx_xmpp_tls_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        if (ngx_xmpp_tls_index == -1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_get_ex_new_index() failed");
            return NGX_ERROR;
        }
    }

    if (SSL_CTX_get_keylog_callback(ctx) != NULL
        && SSL_CTX_get_keylog_callback(ctx) != ngx_xmpp_tls_keylog)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "a TLS key log callback is already set: "
                           "\"conclave_tls_record_layer\" is off for "
                           "this server");
        return NGX_OK;
    }

    SSL_CTX_set_keylog_callback(ctx, ngx_xmpp_tls_keylog);

    /*
     * RFC 8446 4.6.1: a ticket would be sent under the application
     * key, after the handshake; with none, our write sequence starts
     * at 0.  nginx turns read-ahead on (ngx_ssl_create): with it,
     * OpenSSL could read the client's first records into its buffer.
     */
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_read_ahead(ctx, 0);

    return NGX_OK;
}


/*
 * The key log line "CLIENT_TRAFFIC_SECRET_0 <random> <secret>" (and
 * SERVER_...) during the handshake: the secrets are kept, in binary,
 * in the connection's pool until the hand-over, and wiped with it.
 */
static void
ngx_xmpp_tls_keylog(const SSL *ssl, const char *line)
{
    u_char              *dst;
    size_t               n;
    ngx_int_t            client;
    const char          *p;
    ngx_xmpp_tls_t      *tls;
    ngx_connection_t    *c;
    ngx_pool_cleanup_t  *cln;

    if (ngx_strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        client = 1;

    } else if (ngx_strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        client = 0;

    } else {
        return;
    }

    c = ngx_ssl_get_connection((ngx_ssl_conn_t *) ssl);

    tls = SSL_get_ex_data(ssl, ngx_xmpp_tls_index);

    if (tls == NULL) {
        cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_xmpp_tls_t));
        if (cln == NULL) {
            return;
        }

        tls = cln->data;
        ngx_memzero(tls, sizeof(ngx_xmpp_tls_t));
        cln->handler = ngx_xmpp_tls_cleanup;

        if (SSL_set_ex_data((SSL *) ssl, ngx_xmpp_tls_index, tls) != 1) {
            return;
        }
    }

    p = ngx_strchr(line + 24, ' ');
    if (p == NULL) {
        return;
    }

    p++;
    n = ngx_strlen(p);

    if (n % 2 || n / 2 > sizeof(tls->rec.rd.secret)) {
        return;
    }

    dst = client ? tls->rec.rd.secret : tls->rec.wr.secret;

    if (ngx_xmpp_tls_unhex(dst, p, n) != NGX_OK) {
        return;
    }

    tls->secret_len = n / 2;

    if (client) {
        tls->have_client = 1;

    } else {
        tls->have_server = 1;
    }
}


static ngx_int_t
ngx_xmpp_tls_unhex(u_char *dst, const char *src, size_t len)
{
    size_t     i;
    ngx_int_t  hi, lo;

    for (i = 0; i < len; i += 2) {
        hi = ngx_hextoi((u_char *) &src[i], 1);
        lo = ngx_hextoi((u_char *) &src[i + 1], 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }

        *dst++ = (u_char) (hi << 4 | lo);
    }

    return NGX_OK;
}


static void
ngx_xmpp_tls_cleanup(void *data)
{
    ngx_xmpp_tls_t  *tls = data;

    if (tls->in) {
        ngx_free(tls->in);
    }

    if (tls->pt) {
        ngx_free(tls->pt);
    }

    if (tls->out) {
        ngx_free(tls->out);
    }

    ngx_explicit_memzero(tls, sizeof(ngx_xmpp_tls_t));
}


/*
 * Right after the handshake: NGX_OK if the connection now runs on our
 * record layer (and *tlsp is its state), NGX_DECLINED if it stays on
 * OpenSSL.  The reason is logged at info either way.
 */
ngx_int_t
ngx_xmpp_tls_switch(ngx_connection_t *c, ngx_xmpp_tls_t **tlsp)
{
    SSL             *ssl;
    u_char           rd[48], wr[48];
    uint16_t         id;
    const char      *why;
    ngx_xmpp_tls_t  *tls;

    *tlsp = NULL;

    if (c->ssl == NULL || ngx_xmpp_tls_index == -1) {
        return NGX_DECLINED;
    }

    ssl = c->ssl->connection;
    tls = SSL_get_ex_data(ssl, ngx_xmpp_tls_index);

    id = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ssl));

    if (SSL_version(ssl) != TLS1_3_VERSION) {
        why = "not TLS 1.3";

    } else if (tls == NULL) {
        why = "no key log on this port";

    } else if (!ngx_xmpp_tlsrec_suite_supported(id)) {
        why = "the cipher suite";

    } else if (SSL_has_pending(ssl)) {
        why = "bytes already read by OpenSSL";

    } else if (!tls->have_client || !tls->have_server) {
        why = "no traffic secrets";

    } else {
        why = NULL;
    }

    if (why) {
        if (tls) {
            (void) SSL_set_ex_data(ssl, ngx_xmpp_tls_index, NULL);
            ngx_xmpp_tls_cleanup(tls);
        }

        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: %s stays on OpenSSL: %s",
                      SSL_get_version(ssl), why);
        ngx_xmpp_metrics_tls(0);
        return NGX_DECLINED;
    }

    ngx_memcpy(rd, tls->rec.rd.secret, tls->secret_len);
    ngx_memcpy(wr, tls->rec.wr.secret, tls->secret_len);

    if (ngx_xmpp_tlsrec_init(&tls->rec, id, rd, wr, tls->secret_len) != 0) {
        ngx_explicit_memzero(rd, sizeof(rd));
        ngx_explicit_memzero(wr, sizeof(wr));
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "xmpp: TLS record layer set-up failed");
        return NGX_ERROR;
    }

    ngx_explicit_memzero(rd, sizeof(rd));
    ngx_explicit_memzero(wr, sizeof(wr));

    /* nginx must never touch the SSL again: c->ssl NULL says so */
    (void) SSL_set_ex_data(ssl, ngx_xmpp_tls_index, NULL);
    SSL_free(ssl);
    c->ssl = NULL;

    c->recv = ngx_xmpp_tls_recv;
    c->send = ngx_xmpp_tls_send;
    c->recv_chain = ngx_xmpp_tls_recv_chain;
    c->send_chain = ngx_xmpp_tls_send_chain;

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "xmpp: TLSv1.3 %s on the record layer",
                  ngx_xmpp_tlsrec_suite_name(&tls->rec));
    ngx_xmpp_metrics_tls(1);

    *tlsp = tls;

    return NGX_OK;
}


static ssize_t
ngx_xmpp_tls_recv(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t           n;
    ngx_xmpp_tls_t  *tls;

    tls = ngx_xmpp_tcp_tls(c);

    if (tls->pt_len) {
        n = ngx_min(size, tls->pt_len);
        ngx_memcpy(buf, tls->pt + tls->pt_pos, n);
        tls->pt_pos += n;
        tls->pt_len -= n;

        if (tls->pt_len == 0) {
            ngx_free(tls->pt);
            tls->pt = NULL;
        }

        return n;
    }

    if (tls->failed) {
        c->read->error = 1;
        return NGX_ERROR;
    }

    if (tls->eof) {
        c->read->ready = 0;
        c->read->eof = 1;
        return 0;
    }

    return ngx_xmpp_tls_read_records(c, tls, buf, size);
}


/*
 * Opens as many whole records as the caller's buffer takes, reading
 * from the socket only when no whole record is at hand.  What is left,
 * a partial record or records for the next call, is carried over in a
 * buffer of its own size; plaintext of a record larger than the
 * caller's buffer likewise.
 */
static ssize_t
ngx_xmpp_tls_read_records(ngx_connection_t *c, ngx_xmpp_tls_t *tls,
    u_char *buf, size_t size)
{
    size_t                 len, pos, got, used, dlen, rlen;
    ssize_t                n;
    u_char                *p, *data;
    uint8_t                alert;
    ngx_xmpp_tlsrec_rc_e   rc;

    p = ngx_xmpp_tls_ibuf;
    len = tls->in_len;
    pos = 0;
    got = 0;

    if (len) {
        ngx_memcpy(p, tls->in, len);
        ngx_free(tls->in);
        tls->in = NULL;
        tls->in_len = 0;
    }

    for ( ;; ) {
        rlen = ngx_xmpp_tlsrec_record_len(p + pos, len - pos);

        /* a record whose plaintext may not fit waits for the next call */
        if (got && rlen && rlen - NGX_XMPP_TLSREC_HDR > size - got) {
            break;
        }

        rc = ngx_xmpp_tlsrec_read(&tls->rec, p + pos, len - pos, &used,
                                  &data, &dlen, &alert);
        pos += used;

        if (rc == NGX_XMPP_TLSREC_DATA) {
            n = ngx_min(dlen, size - got);
            ngx_memcpy(buf + got, data, n);
            got += n;

            if ((size_t) n < dlen
                && ngx_xmpp_tls_carry(c, &tls->pt, &tls->pt_len,
                                      data + n, dlen - n)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            tls->pt_pos = 0;

            if (got == size) {
                break;
            }

            continue;
        }

        if (rc == NGX_XMPP_TLSREC_CONTROL) {
            if (tls->rec.update_owed
                && ngx_xmpp_tls_flush(c, tls) == NGX_ERROR)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (rc == NGX_XMPP_TLSREC_CLOSE) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "xmpp: TLS close_notify from the client");
            tls->eof = 1;
            break;
        }

        if (rc == NGX_XMPP_TLSREC_FATAL) {
            ngx_xmpp_tls_fatal(c, tls, alert);
            break;
        }

        /* NGX_XMPP_TLSREC_AGAIN: a whole record needs more bytes */

        if (got) {
            break;
        }

        n = ngx_xmpp_tls_fill(c, tls, &len, &pos);

        if (n <= 0) {
            /* NGX_AGAIN, NGX_ERROR, or the end of the connection */
            return n;
        }
    }

    /* nothing is read after close_notify or an alert */
    if (!tls->eof && !tls->failed
        && ngx_xmpp_tls_carry(c, &tls->in, &tls->in_len, p + pos,
                              len - pos)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (got) {
        return got;
    }

    if (tls->eof) {
        return 0;
    }

    c->read->error = 1;
    return NGX_ERROR;
}


/*
 * No whole record is at hand: the partial one moves to the start of
 * the buffer and the socket is read after it.  Returns what
 * ngx_io.recv() did; on NGX_AGAIN the partial record is carried over.
 */
static ssize_t
ngx_xmpp_tls_fill(ngx_connection_t *c, ngx_xmpp_tls_t *tls, size_t *len,
    size_t *pos)
{
    u_char   *p;
    ssize_t   n;

    p = ngx_xmpp_tls_ibuf;

    if (*pos) {
        ngx_memmove(p, p + *pos, *len - *pos);
        *len -= *pos;
        *pos = 0;
    }

    n = ngx_io.recv(c, p + *len, sizeof(ngx_xmpp_tls_ibuf) - *len);

    if (n == NGX_AGAIN || n == NGX_ERROR) {
        if (ngx_xmpp_tls_carry(c, &tls->in, &tls->in_len, p, *len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (n == NGX_ERROR) {
            tls->failed = 1;
        }

        return n;
    }

    if (n == 0) {
        /* RFC 8446 6.1: an end without close_notify is a truncation */
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: TLS connection closed without close_notify%s",
                      *len ? " inside a record" : "");
        tls->eof = 1;
        return 0;
    }

    *len += n;

    return n;
}


static ngx_int_t
ngx_xmpp_tls_carry(ngx_connection_t *c, u_char **dst, size_t *dst_len,
    u_char *src, size_t len)
{
    if (len == 0) {
        return NGX_OK;
    }

    *dst = ngx_alloc(len, c->log);
    if (*dst == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(*dst, src, len);
    *dst_len = len;

    return NGX_OK;
}


/* RFC 8446 6.2: the alert we owe (none for one received), then close */
static void
ngx_xmpp_tls_fatal(ngx_connection_t *c, ngx_xmpp_tls_t *tls, uint8_t alert)
{
    size_t       n;
    tls->failed = 1;

    if (alert == 0) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: TLS alert %ud from the client",
                      (ngx_uint_t) tls->rec.peer_alert);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "xmpp: bad TLS record from the client, sending alert "
                  "%s(%ud)", ngx_xmpp_tls_alert_name(alert),
                  (ngx_uint_t) alert);

    /* after what is still queued, if the kernel takes it now */
    if (ngx_xmpp_tls_flush(c, tls) != NGX_OK) {
        return;
    }

    n = ngx_xmpp_tlsrec_alert(&tls->rec, alert, ngx_xmpp_tls_obuf);

    if (n) {
        (void) ngx_xmpp_tls_write(c, tls, ngx_xmpp_tls_obuf, n);
    }
}


static const char *
ngx_xmpp_tls_alert_name(uint8_t alert)
{
    switch (alert) {
    case NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE:
        return "unexpected_message";
    case NGX_XMPP_TLSREC_BAD_RECORD_MAC:
        return "bad_record_mac";
    case NGX_XMPP_TLSREC_RECORD_OVERFLOW:
        return "record_overflow";
    case NGX_XMPP_TLSREC_ILLEGAL_PARAMETER:
        return "illegal_parameter";
    case NGX_XMPP_TLSREC_DECODE_ERROR:
        return "decode_error";
    default:
        return "internal_error";
    }
}


static ssize_t
ngx_xmpp_tls_recv_chain(ngx_connection_t *c, ngx_chain_t *in, off_t limit)
{
    ngx_buf_t  *b;

    b = in->buf;

    return ngx_xmpp_tls_recv(c, b->last, b->end - b->last);
}


/*
 * Sends what is queued: ciphertext the kernel did not take, and our
 * KeyUpdate if the client asked for one (RFC 8446 4.6.3).  NGX_OK when
 * nothing is left, NGX_AGAIN with the write event armed, NGX_ERROR.
 */
ngx_int_t
ngx_xmpp_tls_flush(ngx_connection_t *c, ngx_xmpp_tls_t *tls)
{
    size_t     n;
    ngx_int_t  rc;

    if (tls->out_len) {
        rc = ngx_xmpp_tls_write(c, tls, tls->out + tls->out_pos,
                                tls->out_len);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (tls->rec.update_owed && !tls->failed) {
        n = ngx_xmpp_tlsrec_pre_data(&tls->rec, ngx_xmpp_tls_obuf);

        if (n == 0) {
            tls->failed = 1;
            return NGX_ERROR;
        }

        return ngx_xmpp_tls_write(c, tls, ngx_xmpp_tls_obuf, n);
    }

    return NGX_OK;
}


/*
 * One ciphertext write.  What the kernel does not take is kept (the
 * plaintext it came from counts as sent, as with ngx_ssl_write) and
 * the write event is armed for it.  c->sent counts plaintext only.
 */
static ngx_int_t
ngx_xmpp_tls_write(ngx_connection_t *c, ngx_xmpp_tls_t *tls, u_char *data,
    size_t len)
{
    off_t     sent;
    u_char   *rest;
    ssize_t   n;

    sent = c->sent;
    n = ngx_io.send(c, data, len);
    c->sent = sent;

    if (n == NGX_ERROR) {
        tls->failed = 1;
        c->write->error = 1;
        return NGX_ERROR;
    }

    if (n == NGX_AGAIN) {
        n = 0;
    }

    if (data == tls->out + tls->out_pos) {
        /* draining the kept ciphertext */
        tls->out_pos += n;
        tls->out_len -= n;

        if (tls->out_len == 0) {
            ngx_free(tls->out);
            tls->out = NULL;
            tls->out_pos = 0;
            return NGX_OK;
        }

    } else if ((size_t) n < len) {
        rest = ngx_alloc(len - n, c->log);
        if (rest == NULL) {
            tls->failed = 1;
            return NGX_ERROR;
        }

        ngx_memcpy(rest, data + n, len - n);
        tls->out = rest;
        tls->out_pos = 0;
        tls->out_len = len - n;

    } else {
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


static ssize_t
ngx_xmpp_tls_send(ngx_connection_t *c, u_char *buf, size_t size)
{
    off_t         sent;
    ngx_buf_t     b;
    ngx_chain_t   cl, *rc;

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.pos = buf;
    b.last = buf + size;
    b.memory = 1;
    cl.buf = &b;
    cl.next = NULL;

    sent = c->sent;
    rc = ngx_xmpp_tls_send_chain(c, &cl, 0);

    if (rc == NGX_CHAIN_ERROR) {
        return NGX_ERROR;
    }

    if (c->sent == sent) {
        return NGX_AGAIN;
    }

    return c->sent - sent;
}


/*
 * RFC 8446 5.1-5.2: the chain's plaintext in records of at most 2^14
 * bytes, one record per write, none while ciphertext is still queued.
 */
static ngx_chain_t *
ngx_xmpp_tls_send_chain(ngx_connection_t *c, ngx_chain_t *in, off_t limit)
{
    size_t           k, len, rlen, take;
    u_char          *p;
    ngx_int_t        rc;
    ngx_xmpp_tls_t  *tls;

    tls = ngx_xmpp_tcp_tls(c);

    if (tls->failed || c->write->error) {
        return NGX_CHAIN_ERROR;
    }

    for ( ;; ) {
        rc = ngx_xmpp_tls_flush(c, tls);

        if (rc == NGX_ERROR) {
            return NGX_CHAIN_ERROR;
        }

        if (rc == NGX_AGAIN) {
            return in;
        }

        while (in && in->buf->pos == in->buf->last) {
            in = in->next;
        }

        if (in == NULL) {
            return NULL;
        }

        /* 5.5: our KeyUpdate first when our key is worn */
        k = ngx_xmpp_tlsrec_pre_data(&tls->rec, ngx_xmpp_tls_obuf);
        p = ngx_xmpp_tls_obuf + k + NGX_XMPP_TLSREC_HDR;
        len = 0;

        while (in && len < NGX_XMPP_TLSREC_PLAIN) {
            take = ngx_min((size_t) (in->buf->last - in->buf->pos),
                           NGX_XMPP_TLSREC_PLAIN - len);
            p = ngx_cpymem(p, in->buf->pos, take);
            in->buf->pos += take;
            len += take;

            if (in->buf->pos == in->buf->last) {
                in = in->next;
            }
        }

        rlen = ngx_xmpp_tlsrec_seal(&tls->rec, NGX_XMPP_TLSREC_APPDATA,
                                    ngx_xmpp_tls_obuf + k
                                    + NGX_XMPP_TLSREC_HDR,
                                    len, ngx_xmpp_tls_obuf + k);
        if (rlen == 0) {
            tls->failed = 1;
            return NGX_CHAIN_ERROR;
        }

        /* as ngx_ssl_write: the plaintext is sent once it is sealed */
        c->sent += len;

        if (ngx_xmpp_tls_write(c, tls, ngx_xmpp_tls_obuf, k + rlen)
            == NGX_ERROR)
        {
            return NGX_CHAIN_ERROR;
        }
    }
}


/*
 * The end of the connection: RFC 8446 6.1, each side sends close_notify
 * before it closes its write side, unless an alert already ended it;
 * only what the kernel takes now goes, nothing waits.
 */
void
ngx_xmpp_tls_close(ngx_connection_t *c, ngx_xmpp_tls_t *tls)
{
    size_t  n;

    if (tls->failed || c->error || c->write->error) {
        return;
    }

    if (ngx_xmpp_tls_flush(c, tls) != NGX_OK) {
        return;
    }

    n = ngx_xmpp_tlsrec_alert(&tls->rec, NGX_XMPP_TLSREC_CLOSE_NOTIFY,
                              ngx_xmpp_tls_obuf);
    if (n) {
        (void) ngx_xmpp_tls_write(c, tls, ngx_xmpp_tls_obuf, n);
    }

    tls->failed = 1;
}
