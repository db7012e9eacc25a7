
/*
 * The module's adapter to the audit library (audit/src/caud.h): every
 * accepted message, sign-in attempt and session end becomes a record in
 * this worker's journal before anything else happens (DESIGN.md "The
 * audit record is the product's spine").
 *
 * Threads.  The event loop only appends (pwrite(2) into the page
 * cache).  Two threads of our own do the rest, so that neither waits in
 * a queue behind LDAP calls in the shared thread pool:
 *
 *   sync thread     group commit: fdatasync()s whatever was appended
 *                   while the previous sync ran, writes checkpoints
 *                   once their records are durable, then wakes the
 *                   event loop through an eventfd;
 *   shipper thread  moves the journal into MariaDB (caud_shipper_*),
 *                   and adopts the journals of workers that are gone.
 *
 * With "conclave_audit_fsync always" a message waits in a FIFO ring
 * until its record is durable and is routed from the eventfd handler;
 * records are durable in seq order, so the ring drains from its head.
 * Its record is batched: the records of one event-loop turn are written
 * with one pwrite(2) from a posted event at the end of the turn, which
 * also wakes the sync thread once (caud_journal_append_flat_batch()).
 * With "interval" and "off" it is written and routed at once.  If the
 * record cannot be written the sender gets an error and the message goes
 * nowhere.
 *
 * Files: this one holds configuration, worker start and exit, and the
 * figures in shared memory; ngx_xmpp_audit_journal.c the appends, the
 * ring and the sync thread; ngx_xmpp_audit_ship.c the shipper thread;
 * ngx_xmpp_audit_rec.c the records.  ngx_xmpp_audit.h is what they
 * share.
 */


#include "ngx_xmpp_audit.h"

#include <sys/eventfd.h>

#include <mysql.h>


static ngx_int_t ngx_xmpp_audit_shm_init(ngx_shm_zone_t *zone, void *data);
static ngx_int_t ngx_xmpp_audit_open(ngx_xmpp_audit_t *a, ngx_log_t *log);
static void ngx_xmpp_audit_claim_slot(ngx_xmpp_audit_t *a);


static ngx_xmpp_audit_t  ngx_xmpp_audit;
ngx_xmpp_audit_t        *ngx_xmpp_audit_worker;


/* ------------------------------------------------------------------ */
/* configuration (master) */

/* the figures of every worker's journal, read by conclave_status */
ngx_shm_zone_t *
ngx_xmpp_audit_add_zone(ngx_conf_t *cf)
{
    ngx_str_t        name = ngx_string("conclave_audit");
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, &name,
                                 ngx_align(sizeof(ngx_xmpp_audit_shm_t)
                                           + 8192, ngx_pagesize),
                                 &ngx_http_conclave_module);
    if (zone == NULL) {
        return NULL;
    }

    zone->init = ngx_xmpp_audit_shm_init;

    return zone;
}


static ngx_int_t
ngx_xmpp_audit_shm_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t       *shpool;
    ngx_xmpp_audit_shm_t  *sh;

    if (data) {
        /* a reload keeps the figures of the workers still running */
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    sh = ngx_slab_calloc(shpool, sizeof(ngx_xmpp_audit_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    if (ngx_shmtx_create(&sh->mutex, &sh->lock, NULL) != NGX_OK) {
        return NGX_ERROR;
    }

    zone->data = sh;

    return NGX_OK;
}


/*
 * The signing key is read by the master, so the file can stay readable
 * by root alone; the workers inherit the loaded key.
 */
char *
ngx_xmpp_audit_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    char         err[256];
    const char  *key, *name;
    ngx_str_t    full;

    if (xcf->audit_dir.len == 0) {
        ngx_str_set(&xcf->audit_dir, "/var/lib/conclave/audit");
    }

    if (xcf->audit_node.len == 0) {
        ngx_str_set(&xcf->audit_node, "local");
    }

    if (xcf->audit_key.len == 0) {
        ngx_str_set(&xcf->audit_key, "/etc/conclave/audit.key");
    }

    if (xcf->db_host.len == 0 && xcf->db_socket.len == 0) {
        ngx_str_set(&xcf->db_host, "127.0.0.1");
    }

    if (xcf->db_user.len == 0) {
        ngx_str_set(&xcf->db_user, "conclave");
    }

    if (xcf->db_name.len == 0) {
        ngx_str_set(&xcf->db_name, "conclave");
    }

    /* "<domain>/audit/<node>": the key's name and the origin prefix */
    full.len = xcf->domain.len + sizeof("/audit/") - 1 + xcf->audit_node.len;
    full.data = ngx_pnalloc(cf->pool, full.len + 1);
    if (full.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(full.data, "%V/audit/%V%Z", &xcf->domain, &xcf->audit_node);
    xcf->audit_origin = full;

    if (ngx_conf_full_name(cf->cycle, &xcf->audit_key, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    key = ngx_xmpp_cstr(cf->pool, &xcf->audit_key);
    name = (const char *) full.data;

    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    err[0] = '\0';

    xcf->audit_signer = caud_signer_load(key, name, err, sizeof(err));
    if (xcf->audit_signer == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "conclave_audit_key \"%s\": %s (create one with "
                           "\"conclavectl keygen\")", key, err);
        return NGX_CONF_ERROR;
    }

    xcf->audit_zone = ngx_xmpp_audit_add_zone(cf);
    if (xcf->audit_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* conclave_audit_fsync */
ngx_conf_enum_t  ngx_xmpp_audit_fsync_policies[] = {
    { ngx_string("always"), NGX_XMPP_FSYNC_ALWAYS },
    { ngx_string("interval"), NGX_XMPP_FSYNC_INTERVAL },
    { ngx_string("off"), NGX_XMPP_FSYNC_OFF },
    { ngx_null_string, 0 }
};


/* ------------------------------------------------------------------ */
/* worker start and exit */

/* this worker's journal, its eventfd and its two threads */
ngx_int_t
ngx_xmpp_audit_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    ngx_connection_t  *c;
    ngx_xmpp_audit_t  *a;

    a = &ngx_xmpp_audit;
    ngx_memzero(a, sizeof(ngx_xmpp_audit_t));

    a->xcf = xcf;
    a->efd = -1;
    a->cp_last_time = ngx_current_msec;

    if (mysql_library_init(0, NULL, NULL) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "xmpp: MariaDB client library init failed");
        return NGX_ERROR;
    }

    a->ring_size = xcf->audit_pending_size;
    a->ring = ngx_alloc(a->ring_size, cycle->log);
    if (a->ring == NULL) {
        return NGX_ERROR;
    }

    if (pthread_mutex_init(&a->mu, NULL) != 0
        || pthread_cond_init(&a->cond, NULL) != 0
        || pthread_cond_init(&a->ship_cond, NULL) != 0)
    {
        return NGX_ERROR;
    }

    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->efd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "xmpp: eventfd() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(a->efd, cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->read->handler = ngx_xmpp_audit_ready;
    c->read->log = cycle->log;
    c->data = a;
    a->efd_conn = c;

    a->flush_ev.handler = ngx_xmpp_audit_flush_handler;
    a->flush_ev.data = a;
    a->flush_ev.log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_xmpp_audit_claim_slot(a);

    /* a journal that cannot be opened refuses messages; it is retried */
    (void) ngx_xmpp_audit_open(a, cycle->log);

    if (pthread_create(&a->sync_tid, NULL, ngx_xmpp_audit_sync_thread, a)
        != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "xmpp: cannot start the journal sync thread");
        return NGX_ERROR;
    }

    a->sync_running = 1;

    if (pthread_create(&a->ship_tid, NULL, ngx_xmpp_audit_ship_thread, a)
        != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "xmpp: cannot start the audit shipper thread");
        return NGX_ERROR;
    }

    a->ship_running = 1;
    ngx_xmpp_audit_worker = a;

    return NGX_OK;
}


/*
 * Writer ids are the worker slot plus a multiple of 64: a respawned
 * worker resumes its predecessor's journal (cutting a torn tail), and
 * during a reload, while the old generation still holds its journals,
 * the new one takes the next free id.  Opening reads and syncs the
 * last segment: it runs before the event loop starts, or in the sync
 * thread when a journal that could not be opened is retried.
 */
static caud_journal_t *
ngx_xmpp_audit_try_open(ngx_xmpp_audit_t *a, uint32_t *idp, char *err,
    size_t errlen)
{
    uint32_t             id;
    ngx_uint_t           i;
    caud_journal_t      *j;
    caud_journal_opts_t  opts;

    ngx_memzero(&opts, sizeof(caud_journal_opts_t));
    opts.no_sync = (a->xcf->audit_fsync == NGX_XMPP_FSYNC_OFF);

    /* zeros ahead of the records: a sync round then flushes data only
     * (caud.h); one zero write per MiB of records, on the event loop */
    opts.prealloc = opts.no_sync ? 0 : NGX_XMPP_AUDIT_PREALLOC;

    for (i = 0; i < NGX_XMPP_AUDIT_ID_TRIES; i++) {
        id = (uint32_t) (ngx_worker + i * NGX_XMPP_AUDIT_ID_STRIDE);
        err[0] = '\0';

        if (caud_journal_open((const char *) a->xcf->audit_dir.data, id,
                              &opts, &j, err, errlen)
            == 0)
        {
            *idp = id;
            return j;
        }

        if (errno != EWOULDBLOCK && errno != EAGAIN) {
            break;
        }
    }

    return NULL;
}


/* the event loop takes a journal into use */
void
ngx_xmpp_audit_install(ngx_xmpp_audit_t *a, caud_journal_t *j, uint32_t id,
    ngx_log_t *log)
{
    pthread_mutex_lock(&a->mu);
    a->journal = j;
    a->writer_id = id;
    pthread_mutex_unlock(&a->mu);

    a->cp_last_seq = caud_journal_last_seq(j);
    a->cp_last_time = ngx_current_msec;

    if (a->slot) {
        a->slot->writer_id = id;
        a->slot->last_seq = a->cp_last_seq;
        a->slot->durable_seq = a->cp_last_seq;
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "xmpp: audit journal %uD in \"%V\" at seq %uL",
                  id, &a->xcf->audit_dir, a->cp_last_seq);
}


static ngx_int_t
ngx_xmpp_audit_open(ngx_xmpp_audit_t *a, ngx_log_t *log)
{
    char             err[320];
    uint32_t         id;
    caud_journal_t  *j;

    j = ngx_xmpp_audit_try_open(a, &id, err, sizeof(err));

    if (j == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "xmpp: audit journal unavailable, sign-ins and "
                      "messages are refused until it opens: %s", err);
        return NGX_ERROR;
    }

    ngx_xmpp_audit_install(a, j, id, log);

    return NGX_OK;
}


/* sync thread, without mu: one more try at a journal that failed */
void
ngx_xmpp_audit_retry_open(ngx_xmpp_audit_t *a)
{
    char             err[320];
    uint32_t         id;
    caud_journal_t  *j;

    j = ngx_xmpp_audit_try_open(a, &id, err, sizeof(err));

    if (j == NULL) {
        return;
    }

    pthread_mutex_lock(&a->mu);
    a->opened = j;
    a->opened_id = id;
    pthread_mutex_unlock(&a->mu);

    ngx_xmpp_audit_wake(a);
}


static void
ngx_xmpp_audit_claim_slot(ngx_xmpp_audit_t *a)
{
    ngx_uint_t              i;
    ngx_xmpp_audit_shm_t   *sh;
    ngx_xmpp_audit_slot_t  *sl;

    sh = a->xcf->audit_zone->data;

    ngx_shmtx_lock(&sh->mutex);

    for (i = 0; i < NGX_XMPP_AUDIT_SLOTS; i++) {
        sl = &sh->slot[i];

        if (sl->pid == 0 || sl->pid == ngx_pid
            || (kill(sl->pid, 0) == -1 && ngx_errno == NGX_ESRCH))
        {
            ngx_memzero(sl, sizeof(ngx_xmpp_audit_slot_t));
            sl->pid = ngx_pid;
            a->slot = sl;
            break;
        }
    }

    ngx_shmtx_unlock(&sh->mutex);
}


/* stops both threads once the last records are synced and routed */
void
ngx_xmpp_audit_exit_worker(ngx_cycle_t *cycle)
{
    char              err[320];
    ngx_xmpp_audit_t  *a;

    a = ngx_xmpp_audit_worker;
    if (a == NULL) {
        return;
    }

    /* this turn's batch first: the last sync round covers it */
    ngx_xmpp_audit_flush(a);

    /* a last checkpoint covers the tail of this journal */
    pthread_mutex_lock(&a->mu);

    if (a->journal && caud_journal_last_seq(a->journal) > a->cp_last_seq) {
        a->cp_seq = caud_journal_last_seq(a->journal);
        ngx_memcpy(a->cp_head, caud_journal_head(a->journal),
                   CAUD_HASH_LEN);
    }

    /*
     * The shipper commits the batch it has in flight and stops: what
     * MariaDB lacks is durable in the journal, and the next start (or a
     * live generation's adoption, or "conclavectl ship") ships it.
     * Shipping a backlog here would hold a graceful stop for as long as
     * the backlog takes (docs/audit.md, "Stopping").
     */
    __atomic_store_n(&a->ship_cancel, 1, __ATOMIC_RELEASE);
    a->stop = 1;
    pthread_cond_broadcast(&a->cond);
    pthread_cond_broadcast(&a->ship_cond);
    pthread_mutex_unlock(&a->mu);

    if (a->sync_running) {
        pthread_join(a->sync_tid, NULL);
        a->sync_running = 0;
    }

    /* whatever became durable still goes to its recipients */
    ngx_xmpp_audit_drain(a, 0);
    ngx_xmpp_audit_drain(a, 1);

    if (a->ship_running) {
        pthread_join(a->ship_tid, NULL);
        a->ship_running = 0;
    }

    if (a->opened) {
        (void) caud_journal_close(a->opened, NULL, 0);
        a->opened = NULL;
    }

    if (a->journal) {
        if (caud_journal_close(a->journal, err, sizeof(err)) != 0) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "xmpp: audit journal close: %s", err);
        }

        a->journal = NULL;
    }

    if (a->efd_conn) {
        ngx_close_connection(a->efd_conn);
        a->efd_conn = NULL;
    }

    if (a->slot) {
        a->slot->pid = 0;
    }

    ngx_free(a->ring);
    a->ring = NULL;

    ngx_xmpp_audit_worker = NULL;
}


/* housekeeping: reopen a journal that failed, time-based checkpoints */
void
ngx_xmpp_audit_tick(ngx_log_t *log)
{
    uint64_t           last;
    ngx_xmpp_audit_t  *a;

    a = ngx_xmpp_audit_worker;
    if (a == NULL) {
        return;
    }

    if (a->journal == NULL) {
        /* the sync thread retries the open */
        return;
    }

    /* a checkpoint names written records only */
    ngx_xmpp_audit_flush(a);

    last = caud_journal_last_seq(a->journal);

    if (last > a->cp_last_seq
        && ngx_current_msec - a->cp_last_time
           >= a->xcf->audit_cp_interval)
    {
        pthread_mutex_lock(&a->mu);
        a->cp_seq = last;
        ngx_memcpy(a->cp_head, caud_journal_head(a->journal),
                   CAUD_HASH_LEN);
        pthread_cond_signal(&a->cond);
        pthread_mutex_unlock(&a->mu);

        a->cp_last_seq = last;
        a->cp_last_time = ngx_current_msec;
    }
}


/* ------------------------------------------------------------------ */
/* the latency breakdown (ngx_xmpp_audit.h) */

uint64_t
ngx_xmpp_audit_now_us(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* 0..3 exact, then 4 buckets per power of two up to about 128 ms */
static ngx_uint_t
ngx_xmpp_audit_lat_bucket(uint64_t us)
{
    ngx_uint_t  o, i;

    if (us < 4) {
        return (ngx_uint_t) us;
    }

    o = 63 - __builtin_clzll(us);
    i = 4 * (o - 1) + ((us >> (o - 2)) & 3);

    return ngx_min(i, NGX_XMPP_AUDIT_LAT_BUCKETS - 1);
}


/* the smallest value of bucket i */
static uint64_t
ngx_xmpp_audit_lat_low(ngx_uint_t i)
{
    if (i < 4) {
        return i;
    }

    return (uint64_t) (4 + i % 4) << (i / 4 - 1);
}


/*
 * One writer per stage (the event loop or the sync thread), so plain
 * relaxed stores suffice; conclave_status in any worker reads them.
 */
void
ngx_xmpp_audit_lat_add(ngx_xmpp_audit_t *a, ngx_uint_t stage,
    uint64_t t0_us, uint64_t t1_us)
{
    uint64_t                us;
    ngx_uint_t              i;
    ngx_xmpp_audit_hist_t  *h;

    if (a->slot == NULL || t0_us == 0) {
        return;
    }

    us = t1_us > t0_us ? t1_us - t0_us : 0;
    h = &a->slot->lat[stage];
    i = ngx_xmpp_audit_lat_bucket(us);

#define ngx_xmpp_audit_bump(v, n)                                          \
    __atomic_store_n(&(v), __atomic_load_n(&(v), __ATOMIC_RELAXED) + (n),  \
                     __ATOMIC_RELAXED)

    ngx_xmpp_audit_bump(h->bucket[i], 1);
    ngx_xmpp_audit_bump(h->sum_us, us);
    ngx_xmpp_audit_bump(h->count, 1);

    if (us > __atomic_load_n(&h->max_us, __ATOMIC_RELAXED)) {
        __atomic_store_n(&h->max_us, us, __ATOMIC_RELAXED);
    }
}


/* the bucket holding quantile q: its upper bound, in microseconds */
static uint64_t
ngx_xmpp_audit_lat_quantile(uint64_t *b, uint64_t n, double q)
{
    uint64_t    want, seen;
    ngx_uint_t  i;

    want = (uint64_t) (q * n);
    seen = 0;

    for (i = 0; i < NGX_XMPP_AUDIT_LAT_BUCKETS - 1; i++) {
        seen += b[i];
        if (seen > want) {
            break;
        }
    }

    /* the last bucket has no upper bound: the caller gives the max */
    return i + 1 < NGX_XMPP_AUDIT_LAT_BUCKETS
           ? ngx_xmpp_audit_lat_low(i + 1) - 1 : 0;
}


static json_t *
ngx_xmpp_audit_lat_json(ngx_xmpp_audit_slot_t *sl)
{
    static const char  *names[NGX_XMPP_AUDIT_LAT_N] = {
        "wait", "write", "queue", "fsync", "notify"
    };

    json_t                 *all, *st, *bl;
    uint64_t                b[NGX_XMPP_AUDIT_LAT_BUCKETS], n, max, p50,
                            p99;
    ngx_uint_t              k, i;
    ngx_xmpp_audit_hist_t  *h;

    all = json_object();
    if (all == NULL) {
        return NULL;
    }

    for (k = 0; k < NGX_XMPP_AUDIT_LAT_N; k++) {
        h = &sl->lat[k];
        n = 0;

        for (i = 0; i < NGX_XMPP_AUDIT_LAT_BUCKETS; i++) {
            b[i] = __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
            n += b[i];
        }

        st = json_object();
        bl = json_array();
        if (st == NULL || bl == NULL) {
            json_decref(st);
            json_decref(bl);
            break;
        }

        /* [lowest value, count] of each bucket in use, for windows */
        for (i = 0; i < NGX_XMPP_AUDIT_LAT_BUCKETS; i++) {
            if (b[i]) {
                json_array_append_new(bl, json_pack("[I,I]",
                    (json_int_t) ngx_xmpp_audit_lat_low(i),
                    (json_int_t) b[i]));
            }
        }

        json_object_set_new(st, "count", json_integer(n));
        json_object_set_new(st, "mean",
            json_real(n ? (double) __atomic_load_n(&h->sum_us,
                                                   __ATOMIC_RELAXED) / n
                        : 0.0));
        max = __atomic_load_n(&h->max_us, __ATOMIC_RELAXED);
        p50 = n ? ngx_xmpp_audit_lat_quantile(b, n, 0.50) : 0;
        p99 = n ? ngx_xmpp_audit_lat_quantile(b, n, 0.99) : 0;

        json_object_set_new(st, "p50", json_integer(n && p50 == 0 ? max
                                                                  : p50));
        json_object_set_new(st, "p99", json_integer(n && p99 == 0 ? max
                                                                  : p99));
        json_object_set_new(st, "max", json_integer(max));
        json_object_set_new(st, "buckets", bl);
        json_object_set_new(all, names[k], st);
    }

    return all;
}


/* ------------------------------------------------------------------ */
/* figures for conclave_health, conclave_status and the history */

/*
 * Read-your-writes for the history (docs/history.md "Right after a
 * send"): the last record of every live journal now, and later whether
 * MariaDB has them all.  A journal whose worker is gone, or whose
 * shipper cannot reach MariaDB, is not waited for.
 */
void
ngx_xmpp_audit_marks(ngx_xmpp_conf_t *xcf, ngx_xmpp_audit_mark_t *m)
{
    ngx_uint_t              i;
    ngx_xmpp_audit_shm_t   *sh;
    ngx_xmpp_audit_slot_t  *sl;

    ngx_memzero(m, NGX_XMPP_AUDIT_MARKS * sizeof(ngx_xmpp_audit_mark_t));

    if (xcf->audit_zone == NULL) {
        return;
    }

    sh = xcf->audit_zone->data;

    for (i = 0; i < NGX_XMPP_AUDIT_SLOTS && i < NGX_XMPP_AUDIT_MARKS; i++) {
        sl = &sh->slot[i];
        m[i].pid = __atomic_load_n(&sl->pid, __ATOMIC_RELAXED);
        m[i].writer = __atomic_load_n(&sl->writer_id, __ATOMIC_RELAXED);
        m[i].seq = __atomic_load_n(&sl->last_seq, __ATOMIC_RELAXED);
    }
}


/* whether MariaDB holds every record ngx_xmpp_audit_marks() saw */
ngx_uint_t
ngx_xmpp_audit_shipped(ngx_xmpp_conf_t *xcf, ngx_xmpp_audit_mark_t *m)
{
    ngx_uint_t              i;
    ngx_xmpp_audit_shm_t   *sh;
    ngx_xmpp_audit_slot_t  *sl;

    if (xcf->audit_zone == NULL) {
        return 1;
    }

    sh = xcf->audit_zone->data;

    for (i = 0; i < NGX_XMPP_AUDIT_SLOTS && i < NGX_XMPP_AUDIT_MARKS; i++) {
        sl = &sh->slot[i];

        if (m[i].pid == 0 || m[i].seq == 0
            || __atomic_load_n(&sl->pid, __ATOMIC_RELAXED) != m[i].pid
            || __atomic_load_n(&sl->writer_id, __ATOMIC_RELAXED)
               != m[i].writer
            || !__atomic_load_n(&sl->db_ok, __ATOMIC_RELAXED))
        {
            continue;
        }

        if (__atomic_load_n(&sl->shipped_seq, __ATOMIC_RELAXED) < m[i].seq) {
            return 0;
        }
    }

    return 1;
}


/* conclave_health: this worker has a journal to write records to */
ngx_int_t
ngx_xmpp_audit_writable(void)
{
    return ngx_xmpp_audit_worker != NULL
           && ngx_xmpp_audit_worker->journal != NULL;
}


/* the shipper freed a backlog's buffers since the last call */
ngx_uint_t
ngx_xmpp_audit_released(void)
{
    if (ngx_xmpp_audit_worker == NULL) {
        return 0;
    }

    return __atomic_exchange_n(&ngx_xmpp_audit_worker->ship_released, 0,
                               __ATOMIC_ACQUIRE) != 0;
}


/* the "audit" member of conclave_status */
json_t *
ngx_xmpp_audit_json(ngx_xmpp_conf_t *xcf)
{
    int64_t                 now, oldest;
    json_t                 *list, *item;
    ngx_uint_t              i;
    ngx_xmpp_audit_shm_t   *sh;
    ngx_xmpp_audit_slot_t  *sl;

    list = json_array();
    if (list == NULL || xcf->audit_zone == NULL) {
        return list;
    }

    sh = xcf->audit_zone->data;
    now = caud_now_us();

    for (i = 0; i < NGX_XMPP_AUDIT_SLOTS; i++) {
        sl = &sh->slot[i];

        if (sl->pid == 0) {
            continue;
        }

        item = json_object();
        if (item == NULL) {
            break;
        }

        oldest = __atomic_load_n(&sl->oldest_unshipped_us, __ATOMIC_RELAXED);

        json_object_set_new(item, "worker_pid", json_integer(sl->pid));
        json_object_set_new(item, "journal", json_integer(sl->writer_id));
        json_object_set_new(item, "last_seq", json_integer(sl->last_seq));
        json_object_set_new(item, "durable_seq",
                            json_integer(sl->durable_seq));
        json_object_set_new(item, "shipped_seq",
                            json_integer(sl->shipped_seq));
        json_object_set_new(item, "backlog_records",
                            json_integer(sl->last_seq > sl->shipped_seq
                                         ? sl->last_seq - sl->shipped_seq
                                         : 0));
        json_object_set_new(item, "backlog_bytes",
                            json_integer(sl->backlog_bytes));
        json_object_set_new(item, "lag_seconds",
                            json_real(oldest && sl->last_seq > sl->shipped_seq
                                      ? (now - oldest) / 1e6 : 0.0));
        json_object_set_new(item, "records_shipped",
                            json_integer(sl->shipped));
        json_object_set_new(item, "records_adopted",
                            json_integer(sl->adopted));
        json_object_set_new(item, "batches_failed",
                            json_integer(sl->failed));
        json_object_set_new(item, "messages_refused",
                            json_integer(sl->refused));
        json_object_set_new(item, "checkpoints",
                            json_integer(sl->checkpoints));
        json_object_set_new(item, "mariadb_ok", json_boolean(sl->db_ok));
        json_object_set_new(item, "ship_buffer_bytes",
                            json_integer(sl->ship_buffer_bytes));
        json_object_set_new(item, "ship_buffer_peak_bytes",
                            json_integer(sl->ship_buffer_peak));
        json_object_set_new(item, "latency_us",
                            ngx_xmpp_audit_lat_json(sl));

        json_array_append_new(list, item);
    }

    return list;
}
