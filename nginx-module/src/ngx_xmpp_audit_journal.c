
/*
 * The audit journal as the event loop and the sync thread see it
 * (the design is in ngx_xmpp_audit.c's opening comment).  The event
 * loop appends records, keeps the ring of messages waiting for their
 * records to be durable, and drains it from the eventfd handler; the
 * sync thread runs the group commit and writes signed checkpoints.
 */


#include "ngx_xmpp_audit.h"


static void ngx_xmpp_audit_appended(ngx_xmpp_audit_t *a, uint64_t seq);
static void ngx_xmpp_audit_lost(ngx_xmpp_audit_t *a, int err);


/* ------------------------------------------------------------------ */
/* the sync thread */

/* a thread's error, logged by the event loop (threads have no log) */
void
ngx_xmpp_audit_thread_error(ngx_xmpp_audit_t *a, const char *what,
    const char *err)
{
    pthread_mutex_lock(&a->mu);
    snprintf(a->thread_err, sizeof(a->thread_err), "%s: %s", what, err);
    a->thread_err_new = 1;
    pthread_mutex_unlock(&a->mu);
}


/* any thread: have the event loop run ngx_xmpp_audit_ready() */
void
ngx_xmpp_audit_wake(ngx_xmpp_audit_t *a)
{
    uint64_t  one = 1;

    /* EAGAIN means the counter is already non-zero: a wake is pending */
    if (write(a->efd, &one, sizeof(uint64_t)) != sizeof(uint64_t)) {
        return;
    }
}


static void
ngx_xmpp_audit_checkpoint(ngx_xmpp_audit_t *a, caud_journal_t *j,
    uint64_t seq, const uint8_t *head)
{
    char               note[CAUD_NOTE_MAX], err[320];
    size_t             len;
    caud_checkpoint_t  cp;

    ngx_memzero(&cp, sizeof(caud_checkpoint_t));

    snprintf(cp.origin, sizeof(cp.origin), "%s/%u",
             (const char *) a->xcf->audit_origin.data,
             (unsigned) a->writer_id);
    cp.size = seq;
    ngx_memcpy(cp.root, head, CAUD_HASH_LEN);

    if (caud_checkpoint_sign(a->xcf->audit_signer, &cp, note, sizeof(note),
                             &len)
        != 0)
    {
        ngx_xmpp_audit_thread_error(a, "checkpoint", "signing failed");
        return;
    }

    if (caud_checkpoint_store((const char *) a->xcf->audit_dir.data,
                              a->writer_id, seq, note, len, err,
                              sizeof(err))
        != 0)
    {
        ngx_xmpp_audit_thread_error(a, "checkpoint", err);
        return;
    }

    if (a->slot) {
        __atomic_add_fetch(&a->slot->checkpoints, 1, __ATOMIC_RELAXED);
    }
}


/*
 * Group commit: one fdatasync() covers every record appended before it
 * started; records appended meanwhile wait for the next round.  With
 * "interval" the thread syncs on a clock instead of on demand.
 */
void *
ngx_xmpp_audit_sync_thread(void *data)
{
    ngx_xmpp_audit_t *a = data;

    int              rc;
    char             err[320];
    uint8_t          head[CAUD_HASH_LEN];
    uint64_t         cp_seq, asked, start, end;
    ngx_uint_t       stop, policy;
    caud_journal_t  *j;
    struct timespec  ts;

    policy = a->xcf->audit_fsync;

    /* a name for top -H, perf and /proc/PID/task (15 characters) */
    (void) pthread_setname_np(pthread_self(), "conclave-sync");

    /* conclave_realtime_priority: it wakes the event loop */
    ngx_xmpp_rt_register_thread();

    pthread_mutex_lock(&a->mu);

    for ( ;; ) {
        while (!a->stop && !a->sync_wanted && a->cp_seq == 0) {
            if (a->journal == NULL && a->opened == NULL) {
                pthread_mutex_unlock(&a->mu);
                ngx_xmpp_audit_retry_open(a);
                pthread_mutex_lock(&a->mu);

                if (a->opened || a->stop) {
                    continue;
                }

                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 1;
                (void) pthread_cond_timedwait(&a->cond, &a->mu, &ts);
                continue;
            }

            if (policy == NGX_XMPP_FSYNC_INTERVAL) {
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += a->xcf->audit_fsync_interval / 1000;
                ts.tv_nsec += (a->xcf->audit_fsync_interval % 1000)
                              * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }

                if (pthread_cond_timedwait(&a->cond, &a->mu, &ts)
                    == ETIMEDOUT)
                {
                    break;
                }

                continue;
            }

            pthread_cond_wait(&a->cond, &a->mu);
        }

        stop = a->stop;
        a->sync_wanted = 0;
        asked = a->sync_t_us;
        a->sync_t_us = 0;
        j = a->journal;
        cp_seq = a->cp_seq;
        ngx_memcpy(head, a->cp_head, CAUD_HASH_LEN);

        pthread_mutex_unlock(&a->mu);

        start = ngx_xmpp_audit_now_us();
        ngx_xmpp_audit_lat_add(a, NGX_XMPP_AUDIT_LAT_QUEUE, asked, start);

        if (j && policy != NGX_XMPP_FSYNC_OFF) {
            err[0] = '\0';

            rc = caud_journal_sync(j, err, sizeof(err));

            end = ngx_xmpp_audit_now_us();
            ngx_xmpp_audit_lat_add(a, NGX_XMPP_AUDIT_LAT_FSYNC, start, end);
            __atomic_store_n(&a->sync_end_us, end, __ATOMIC_RELEASE);

            if (rc != 0) {
                /* the library keeps the journal failed from now on */
                ngx_xmpp_audit_thread_error(a, "journal sync", err);

                pthread_mutex_lock(&a->mu);
                a->sync_failed = 1;
                pthread_mutex_unlock(&a->mu);
            }
        }

        if (j && cp_seq
            && (policy == NGX_XMPP_FSYNC_OFF
                || caud_journal_durable_seq(j) >= cp_seq))
        {
            ngx_xmpp_audit_checkpoint(a, j, cp_seq, head);
        }

        /* done or impossible (a failed journal): never spin on it */
        if (cp_seq) {
            pthread_mutex_lock(&a->mu);
            if (a->cp_seq == cp_seq) {
                a->cp_seq = 0;
            }
            pthread_mutex_unlock(&a->mu);
        }

        ngx_xmpp_audit_wake(a);

        pthread_mutex_lock(&a->mu);

        if (stop) {
            break;
        }
    }

    pthread_mutex_unlock(&a->mu);

    return NULL;
}


/* ------------------------------------------------------------------ */
/* the event loop: records, the pending ring, wake-ups */

/* the eventfd handler: what the threads left for the event loop */
void
ngx_xmpp_audit_ready(ngx_event_t *ev)
{
    char               msg[512];
    uint32_t           id;
    uint64_t           n;
    ngx_uint_t         have, failed;
    caud_journal_t    *j;
    ngx_connection_t  *c;
    ngx_xmpp_audit_t  *a;

    c = ev->data;
    a = c->data;

    while (read(a->efd, &n, sizeof(uint64_t)) == sizeof(uint64_t)) {
        /* void */
    }

    /* the last round's end: how long this wake-up took */
    ngx_xmpp_audit_lat_add(a, NGX_XMPP_AUDIT_LAT_NOTIFY,
                           __atomic_exchange_n(&a->sync_end_us, 0,
                                               __ATOMIC_ACQUIRE),
                           ngx_xmpp_audit_now_us());

    pthread_mutex_lock(&a->mu);
    have = a->thread_err_new;
    if (have) {
        ngx_memcpy(msg, a->thread_err, sizeof(msg));
        a->thread_err_new = 0;
    }
    failed = a->sync_failed;
    j = a->opened;
    id = a->opened_id;
    a->opened = NULL;
    pthread_mutex_unlock(&a->mu);

    if (j) {
        ngx_xmpp_audit_install(a, j, id, ev->log);
    }

    if (have) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0, "xmpp: audit %s", msg);
    }

    if (a->journal && a->slot) {
        a->slot->durable_seq = caud_journal_durable_seq(a->journal);
    }

    /*
     * A sync round releases many messages: their sends are corked, so
     * a session gets the round's messages with one send() at the end
     * of the turn (docs/routing.md).
     */
    ngx_xmpp_session_cork();
    ngx_xmpp_audit_drain(a, failed);
    ngx_xmpp_session_uncork();

    if (ngx_handle_read_event(ev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "xmpp: cannot re-arm the audit eventfd");
    }
}


/*
 * Routes the messages whose records are durable, oldest first.  With
 * failed set (the journal cannot be synced any more) the rest can
 * never become durable: their senders get an error instead.
 */
void
ngx_xmpp_audit_drain(ngx_xmpp_audit_t *a, ngx_uint_t failed)
{
    u_char                    *p;
    uint64_t                   durable, now;
    ngx_uint_t                 ok;
    ngx_xmpp_session_t        *s;
    ngx_xmpp_delivery_t        d;
    ngx_xmpp_audit_pending_t  *e;

    if (a->journal == NULL || a->used == 0) {
        return;
    }

    durable = caud_journal_durable_seq(a->journal);
    now = ngx_xmpp_audit_now_us();

    while (a->used) {
        e = (ngx_xmpp_audit_pending_t *) (a->ring + a->head);

        if (a->ring_size - a->head < sizeof(ngx_xmpp_audit_pending_t)
            || e->seq == 0)
        {
            /* wrap marker: the rest of the ring was unused */
            a->used -= a->ring_size - a->head;
            a->head = 0;
            continue;
        }

        if (!e->lost && e->seq > durable && !failed) {
            break;
        }

        p = (u_char *) e + sizeof(ngx_xmpp_audit_pending_t);
        ok = (!e->lost && e->seq <= durable);

        if (e->kind == NGX_XMPP_AUDIT_DEFERRED) {
            /* done() may append records: the entry stays counted */
            e->done(p, e->data_len, ok);
            goto next;
        }

        ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));
        d.kind = e->kind;
        d.to.full.data = p;
        d.to.full.len = e->to_len;
        d.to.bare.data = p;
        d.to.bare.len = e->bare_len;
        d.to.local.data = p;
        d.to.local.len = e->local_len;
        d.to.domain.data = p + (e->local_len ? e->local_len + 1 : 0);
        d.to.domain.len = e->bare_len - (e->local_len ? e->local_len + 1
                                                      : 0);
        d.to.resource.data = p + e->bare_len + 1;
        d.to.resource.len = e->to_len > e->bare_len
                            ? e->to_len - e->bare_len - 1 : 0;
        p += e->to_len;
        d.type.data = p;
        d.type.len = e->type_len;
        p += e->type_len;
        d.id.data = p;
        d.id.len = e->id_len;
        p += e->id_len;
        d.data = p;
        d.len = e->data_len;

        s = ngx_xmpp_session_find(e->sid);
        if (s && !s->bound) {
            s = NULL;
        }

        if (ok) {
            ngx_xmpp_audit_lat_add(a, NGX_XMPP_AUDIT_LAT_WAIT, e->t_us, now);
            ngx_xmpp_router_deliver(a->xcf, s, &d);

        } else if (e->lost == NGX_XMPP_AUDIT_LOST_FULL) {
            if (s) {
                ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                              "xmpp: audit journal full, message refused");
            }

            ngx_xmpp_router_bounce(s, &d, "wait", "resource-constraint");

        } else {
            ngx_xmpp_router_bounce(s, &d, "wait", "internal-server-error");
        }

    next:

        e = (ngx_xmpp_audit_pending_t *) (a->ring + a->head);
        a->head += e->size;
        a->used -= e->size;

        if (a->head == a->ring_size) {
            a->head = 0;
        }
    }

    if (a->used == 0) {
        a->head = 0;
        a->tail = 0;
    }
}


/* room for an entry of size bytes at the tail, or NULL */
u_char *
ngx_xmpp_audit_ring_reserve(ngx_xmpp_audit_t *a, size_t size)
{
    size_t                     room;
    ngx_xmpp_audit_pending_t  *mark;

    if (a->used == 0) {
        a->head = 0;
        a->tail = 0;
    }

    if (a->tail >= a->head && (a->used == 0 || a->tail != a->head)) {
        /* free space: [tail, end) and [0, head) */
        room = a->ring_size - a->tail;

        if (room >= size) {
            return a->ring + a->tail;
        }

        if (a->head < size) {
            return NULL;
        }

        if (room >= sizeof(ngx_xmpp_audit_pending_t)) {
            mark = (ngx_xmpp_audit_pending_t *) (a->ring + a->tail);
            mark->seq = 0;
        }

        /* the wasted end counts as used until the head passes it */
        a->used += room;
        a->tail = 0;

        return a->ring;
    }

    /* free space: [tail, head) */
    if (a->head - a->tail < size) {
        return NULL;
    }

    return a->ring + a->tail;
}


/* a jansson record (console actions, room events), written at once */
ngx_int_t
ngx_xmpp_audit_append(ngx_xmpp_audit_t *a, json_t *rec, uint64_t *seq)
{
    if (a == NULL || a->journal == NULL) {
        errno = EIO;
        return NGX_ERROR;
    }

    if (caud_journal_append(a->journal, rec, seq) != 0) {
        ngx_xmpp_audit_lost(a, errno);
        return NGX_ERROR;
    }

    ngx_xmpp_audit_appended(a, *seq);

    return NGX_OK;
}


/*
 * The records written per stanza and per session are flat
 * (caud_flat_t): encoded straight into the journal's frame buffer, no
 * jansson object and no malloc per stanza.
 */
ngx_int_t
ngx_xmpp_audit_append_flat(ngx_xmpp_audit_t *a, caud_flat_t *rec,
    uint64_t *seq)
{
    if (a == NULL || a->journal == NULL) {
        errno = EIO;
        return NGX_ERROR;
    }

    if (caud_journal_append_flat(a->journal, rec, seq) != 0) {
        ngx_xmpp_audit_lost(a, errno);
        return NGX_ERROR;
    }

    ngx_xmpp_audit_appended(a, *seq);

    return NGX_OK;
}


/*
 * A message record under "always": built now, written with the rest of
 * this event-loop turn's records by ngx_xmpp_audit_flush() (its message
 * waits in the ring for durability anyway, so nothing is routed before
 * the write and the sync that follows it).
 */
ngx_int_t
ngx_xmpp_audit_append_batch(ngx_xmpp_audit_t *a, caud_flat_t *rec,
    uint64_t *seq)
{
    if (a == NULL || a->journal == NULL) {
        errno = EIO;
        return NGX_ERROR;
    }

    if (caud_journal_written_seq(a->journal)
        == caud_journal_last_seq(a->journal))
    {
        /* the turn's first record: the batch's write is timed from it */
        a->batch_t_us = ngx_xmpp_audit_now_us();
    }

    if (caud_journal_append_flat_batch(a->journal, rec, seq) != 0) {
        ngx_xmpp_audit_lost(a, errno);
        return NGX_ERROR;
    }

    /* read-your-writes for the history waits for it (audit_marks) */
    if (a->slot) {
        a->slot->last_seq = *seq;
    }

    if (!a->flush_ev.posted) {
        ngx_post_event(&a->flush_ev, &ngx_posted_events);
    }

    return NGX_OK;
}


/* posted: runs after every other handler of the event-loop turn */
void
ngx_xmpp_audit_flush_handler(ngx_event_t *ev)
{
    ngx_xmpp_audit_flush(ev->data);
}


/* writes this turn's batch with one pwrite(2) */
void
ngx_xmpp_audit_flush(ngx_xmpp_audit_t *a)
{
    int  err;

    if (a->flush_ev.posted) {
        ngx_delete_posted_event(&a->flush_ev);
    }

    if (a->journal == NULL
        || caud_journal_written_seq(a->journal)
           == caud_journal_last_seq(a->journal))
    {
        return;
    }

    if (caud_journal_flush(a->journal) != 0) {
        err = errno;
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, err,
                      "xmpp: audit journal write failed, the messages "
                      "of this turn are refused: %s",
                      caud_journal_error(a->journal));
        ngx_xmpp_audit_lost(a, err);
        return;
    }

    ngx_xmpp_audit_lat_add(a, NGX_XMPP_AUDIT_LAT_WRITE, a->batch_t_us,
                           ngx_xmpp_audit_now_us());
    a->batch_t_us = 0;

    ngx_xmpp_audit_appended(a, caud_journal_last_seq(a->journal));
}


/*
 * A write failed and took the batched records with it (the journal
 * rolled back to its last written record): their messages, the ring's
 * entries past written_seq, bounce when the drain reaches them, which
 * the eventfd handler does soon (not here: the caller may be in the
 * middle of a stanza).
 */
static void
ngx_xmpp_audit_lost(ngx_xmpp_audit_t *a, int err)
{
    size_t                     pos, left;
    uint64_t                   written;
    ngx_uint_t                 why;
    ngx_xmpp_audit_pending_t  *e;

    written = caud_journal_written_seq(a->journal);
    why = (err == ENOSPC || err == EDQUOT || err == EFBIG)
          ? NGX_XMPP_AUDIT_LOST_FULL : NGX_XMPP_AUDIT_LOST_ERROR;

    if (a->slot) {
        a->slot->last_seq = written;
    }

    pos = a->head;
    left = a->used;

    while (left) {
        e = (ngx_xmpp_audit_pending_t *) (a->ring + pos);

        if (a->ring_size - pos < sizeof(ngx_xmpp_audit_pending_t)
            || e->seq == 0)
        {
            left -= a->ring_size - pos;
            pos = 0;
            continue;
        }

        if (e->seq > written && !e->lost) {
            e->lost = why;
        }

        pos += e->size;
        left -= e->size;

        if (pos == a->ring_size) {
            pos = 0;
        }
    }

    ngx_xmpp_audit_wake(a);

    /* the caller reports err */
    errno = err;
}


/* a checkpoint when due, and a sync round for "always" */
static void
ngx_xmpp_audit_appended(ngx_xmpp_audit_t *a, uint64_t seq)
{
    if (a->slot) {
        a->slot->last_seq = seq;
    }

    pthread_mutex_lock(&a->mu);

    if (seq - a->cp_last_seq >= a->xcf->audit_cp_records) {
        a->cp_seq = seq;
        ngx_memcpy(a->cp_head, caud_journal_head(a->journal), CAUD_HASH_LEN);
        a->cp_last_seq = seq;
        a->cp_last_time = ngx_current_msec;
    }

    if (a->xcf->audit_fsync == NGX_XMPP_FSYNC_ALWAYS || a->cp_seq) {
        if (!a->sync_wanted) {
            a->sync_t_us = ngx_xmpp_audit_now_us();
        }

        a->sync_wanted = 1;
        pthread_cond_signal(&a->cond);
    }

    pthread_mutex_unlock(&a->mu);
}
