
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
 */


#include "ngx_xmpp.h"

#include <pthread.h>
#include <sys/eventfd.h>

#include <mysql.h>

#include "caud.h"


#define NGX_XMPP_AUDIT_SLOTS        128
#define NGX_XMPP_AUDIT_ID_STRIDE    64
#define NGX_XMPP_AUDIT_ID_TRIES     16
#define NGX_XMPP_AUDIT_ADOPT_EVERY  5000       /* ms */
#define NGX_XMPP_AUDIT_PROBE_EVERY  2000       /* ms */
#define NGX_XMPP_AUDIT_IDS_MAX      1024


/* per-worker figures in shared memory, for conclave_status */
typedef struct {
    ngx_pid_t              pid;
    uint32_t               writer_id;
    uint64_t               last_seq;
    uint64_t               durable_seq;
    uint64_t               shipped_seq;
    uint64_t               backlog_bytes;
    int64_t                oldest_unshipped_us;
    uint64_t               shipped;
    uint64_t               failed;
    uint64_t               refused;
    uint64_t               checkpoints;
    uint64_t               adopted;
    uint64_t               db_ok;
} ngx_xmpp_audit_slot_t;


typedef struct {
    ngx_shmtx_t            mutex;
    ngx_shmtx_sh_t         lock;
    ngx_xmpp_audit_slot_t  slot[NGX_XMPP_AUDIT_SLOTS];
} ngx_xmpp_audit_shm_t;


/*
 * A message waiting for its record to be durable; bytes follow.  With
 * kind NGX_XMPP_AUDIT_DEFERRED the bytes are done()'s data instead
 * (ngx_xmpp_audit_defer).
 */
#define NGX_XMPP_AUDIT_DEFERRED     0xffff

typedef struct {
    uint64_t               seq;          /* 0: wrap marker */
    uint64_t               sid;          /* the sender's session */
    ngx_xmpp_audit_done_pt done;
    uint32_t               size;         /* the whole entry, aligned */
    uint32_t               data_len;
    uint16_t               to_len;
    uint16_t               local_len;
    uint16_t               bare_len;
    uint16_t               type_len;
    uint16_t               id_len;
    uint16_t               kind;
    ngx_uint_t             lost;         /* its batch was not written */
} ngx_xmpp_audit_pending_t;


#define NGX_XMPP_AUDIT_LOST_FULL    1
#define NGX_XMPP_AUDIT_LOST_ERROR   2


typedef struct {
    ngx_xmpp_conf_t       *xcf;
    caud_journal_t        *journal;
    uint32_t               writer_id;
    ngx_xmpp_audit_slot_t *slot;

    /* the ring of pending messages (event loop only) */
    u_char                *ring;
    size_t                 ring_size;
    size_t                 head;
    size_t                 tail;
    size_t                 used;

    /* shared with the sync thread, under mu */
    pthread_mutex_t        mu;
    pthread_cond_t         cond;
    pthread_cond_t         ship_cond;
    ngx_uint_t             stop;
    ngx_uint_t             sync_wanted;
    uint64_t               cp_seq;       /* checkpoint wanted at this seq */
    uint8_t                cp_head[CAUD_HASH_LEN];
    char                   thread_err[512];
    ngx_uint_t             thread_err_new;
    ngx_uint_t             sync_failed;
    caud_journal_t        *opened;       /* retried open, to install */
    uint32_t               opened_id;

    /* event loop's checkpoint bookkeeping */
    uint64_t               cp_last_seq;
    ngx_msec_t             cp_last_time;

    int                    efd;
    ngx_connection_t      *efd_conn;
    ngx_event_t            flush_ev;     /* posted: a batch to write */
    pthread_t              sync_tid;
    pthread_t              ship_tid;
    unsigned               sync_running:1;
    unsigned               ship_running:1;
} ngx_xmpp_audit_t;


static ngx_int_t ngx_xmpp_audit_shm_init(ngx_shm_zone_t *zone, void *data);
static ngx_int_t ngx_xmpp_audit_open(ngx_xmpp_audit_t *a, ngx_log_t *log);
static void ngx_xmpp_audit_claim_slot(ngx_xmpp_audit_t *a);
static void *ngx_xmpp_audit_sync_thread(void *data);
static void *ngx_xmpp_audit_ship_thread(void *data);
static void ngx_xmpp_audit_ready(ngx_event_t *ev);
static void ngx_xmpp_audit_wake(ngx_xmpp_audit_t *a);
static void ngx_xmpp_audit_drain(ngx_xmpp_audit_t *a, ngx_uint_t failed);
static void ngx_xmpp_audit_appended(ngx_xmpp_audit_t *a, uint64_t seq);
static void ngx_xmpp_audit_flush_handler(ngx_event_t *ev);
static void ngx_xmpp_audit_flush(ngx_xmpp_audit_t *a);
static void ngx_xmpp_audit_lost(ngx_xmpp_audit_t *a, int err);
static ngx_int_t ngx_xmpp_audit_append(ngx_xmpp_audit_t *a, json_t *rec,
    uint64_t *seq);
static void ngx_xmpp_audit_actor(ngx_xmpp_session_t *s, caud_actor_t *act,
    char *user, size_t size);


static ngx_xmpp_audit_t  ngx_xmpp_audit;
static ngx_xmpp_audit_t *ngx_xmpp_audit_worker;


/* ------------------------------------------------------------------ */
/* configuration (master) */

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
static void
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
static void
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
/* the sync thread */

static void
ngx_xmpp_audit_thread_error(ngx_xmpp_audit_t *a, const char *what,
    const char *err)
{
    pthread_mutex_lock(&a->mu);
    snprintf(a->thread_err, sizeof(a->thread_err), "%s: %s", what, err);
    a->thread_err_new = 1;
    pthread_mutex_unlock(&a->mu);
}


static void
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
static void *
ngx_xmpp_audit_sync_thread(void *data)
{
    ngx_xmpp_audit_t *a = data;

    char             err[320];
    uint8_t          head[CAUD_HASH_LEN];
    uint64_t         cp_seq;
    ngx_uint_t       stop, policy;
    caud_journal_t  *j;
    struct timespec  ts;

    policy = a->xcf->audit_fsync;

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
        j = a->journal;
        cp_seq = a->cp_seq;
        ngx_memcpy(head, a->cp_head, CAUD_HASH_LEN);

        pthread_mutex_unlock(&a->mu);

        if (j && policy != NGX_XMPP_FSYNC_OFF) {
            err[0] = '\0';

            if (caud_journal_sync(j, err, sizeof(err)) != 0) {
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
/* the shipper thread */

/*
 * The shipping lag and the byte backlog: the time of the first record
 * MariaDB lacks, and the bytes from it to the end of the journal (its
 * segment's rest plus every later segment; 20-digit names sort by seq).
 */
static void
ngx_xmpp_audit_probe(ngx_xmpp_audit_t *a, uint32_t id, uint64_t shipped)
{
    DIR            *dir;
    char            err[320], path[4096], prefix[64], first[256];
    size_t          plen;
    json_t         *rec, *ts;
    int64_t         oldest;
    uint64_t        bytes;
    const char     *d;
    caud_frame_t    f;
    caud_reader_t  *r;
    struct stat     st;
    struct dirent  *de;

    d = (const char *) a->xcf->audit_dir.data;
    oldest = 0;
    bytes = 0;

    if (caud_reader_open(d, id, shipped + 1, &r, err, sizeof(err)) != 0) {
        return;
    }

    if (caud_reader_next(r, &f) != 1) {
        caud_reader_close(r);
        return;
    }

    rec = caud_record_decode(f.payload, f.len, NULL, 0);
    if (rec) {
        ts = json_object_get(rec, "ts_utc_us");
        oldest = json_is_integer(ts) ? json_integer_value(ts) : 0;
        json_decref(rec);
    }

    ngx_cpystrn((u_char *) first, (u_char *) f.file, sizeof(first));
    snprintf(path, sizeof(path), "%s/%s", d, first);

    if (stat(path, &st) == 0 && (uint64_t) st.st_size > f.offset) {
        bytes = st.st_size - f.offset;
    }

    caud_reader_close(r);

    plen = snprintf(prefix, sizeof(prefix), "journal-%u-", (unsigned) id);

    dir = opendir(d);

    while (dir && (de = readdir(dir)) != NULL) {
        if (ngx_strncmp(de->d_name, prefix, plen) == 0
            && ngx_strcmp(de->d_name, first) > 0
            && ngx_strlen(de->d_name) == ngx_strlen(first))
        {
            snprintf(path, sizeof(path), "%s/%s", d, de->d_name);
            if (stat(path, &st) == 0) {
                bytes += st.st_size;
            }
        }
    }

    if (dir) {
        closedir(dir);
    }

    if (a->slot) {
        __atomic_store_n(&a->slot->oldest_unshipped_us, oldest,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&a->slot->backlog_bytes, bytes, __ATOMIC_RELAXED);
    }
}


/*
 * Journals nobody writes any more (their worker died, or the pool of
 * workers shrank) are shipped here.  Two shippers on one journal are
 * harmless: the first commit wins and the other's batch is rolled back.
 */
static void
ngx_xmpp_audit_adopt(ngx_xmpp_audit_t *a, caud_shipper_t *sh)
{
    char        err[320];
    size_t      i, n;
    int64_t     got;
    uint32_t   *ids;
    const char *dir;

    dir = (const char *) a->xcf->audit_dir.data;

    ids = malloc(NGX_XMPP_AUDIT_IDS_MAX * sizeof(uint32_t));
    if (ids == NULL) {
        return;
    }

    if (caud_journal_list(dir, ids, NGX_XMPP_AUDIT_IDS_MAX, &n) != 0) {
        free(ids);
        return;
    }

    for (i = 0; i < n; i++) {
        if (ids[i] == a->writer_id || caud_journal_locked(dir, ids[i]) != 0)
        {
            continue;
        }

        got = caud_shipper_ship(sh, ids[i], 0, err, sizeof(err));

        if (got < 0) {
            ngx_xmpp_audit_thread_error(a, "shipping an orphaned journal",
                                        err);
            break;
        }

        if (got > 0 && a->slot) {
            __atomic_add_fetch(&a->slot->adopted, (uint64_t) got,
                               __ATOMIC_RELAXED);
        }
    }

    free(ids);
}


static void
ngx_xmpp_audit_ship_stats(ngx_xmpp_audit_t *a, caud_shipper_t *sh,
    uint64_t shipped, ngx_uint_t ok)
{
    caud_ship_stats_t  st;

    if (a->slot == NULL) {
        return;
    }

    caud_shipper_stats(sh, &st);

    __atomic_store_n(&a->slot->shipped, st.shipped, __ATOMIC_RELAXED);
    __atomic_store_n(&a->slot->failed, st.failed, __ATOMIC_RELAXED);
    __atomic_store_n(&a->slot->db_ok, (uint64_t) ok, __ATOMIC_RELAXED);

    if (ok) {
        __atomic_store_n(&a->slot->shipped_seq, shipped, __ATOMIC_RELAXED);
    }
}


static caud_shipper_t *
ngx_xmpp_audit_shipper(ngx_xmpp_audit_t *a)
{
    char             err[320];
    caud_db_opts_t   db;
    ngx_xmpp_conf_t *xcf;
    caud_shipper_t  *sh;

    xcf = a->xcf;

    ngx_memzero(&db, sizeof(caud_db_opts_t));
    db.host = (const char *) xcf->db_host.data;
    db.port = (unsigned) xcf->db_port;
    db.socket = (const char *) xcf->db_socket.data;
    db.user = (const char *) xcf->db_user.data;
    db.password = (const char *) xcf->db_password.data;
    db.database = (const char *) xcf->db_name.data;
    db.timeout_s = (unsigned) ((xcf->db_timeout + 999) / 1000);

    err[0] = '\0';

    sh = caud_shipper_new(&db, (const char *) xcf->audit_dir.data,
                          (const char *) xcf->audit_node.data,
                          xcf->ship_batch, err, sizeof(err));
    if (sh == NULL) {
        ngx_xmpp_audit_thread_error(a, "shipper", err);
    }

    return sh;
}


static void *
ngx_xmpp_audit_ship_thread(void *data)
{
    ngx_xmpp_audit_t *a = data;

    char             err[320];
    int64_t          got;
    uint32_t         id;
    uint64_t         durable, shipped, ms, since_adopt, since_probe;
    ngx_uint_t       stop, ok, failing, known;
    caud_journal_t  *j;
    caud_shipper_t  *sh;
    struct timespec  ts;

    (void) mysql_thread_init();

    known = 0;

    sh = ngx_xmpp_audit_shipper(a);
    since_adopt = NGX_XMPP_AUDIT_ADOPT_EVERY;
    since_probe = 0;
    failing = 0;

    while (sh) {
        pthread_mutex_lock(&a->mu);
        stop = a->stop;
        j = a->journal;
        id = a->writer_id;
        pthread_mutex_unlock(&a->mu);

        got = 0;
        ok = 1;

        if (j) {
            /* never ship a record that a power cut could still undo */
            durable = caud_journal_durable_seq(j);
            shipped = caud_shipper_shipped_seq(sh, id);

            if (a->xcf->audit_fsync == NGX_XMPP_FSYNC_OFF) {
                durable = caud_journal_written_seq(j);
            }

            /* a first call learns shipped_seq and whether MariaDB is up */
            if (durable > 0
                && (durable > shipped || !known || since_probe >= 1000))
            {
                got = caud_shipper_ship(sh, id, durable, err, sizeof(err));
                known = (got >= 0);
            }

            if (got < 0) {
                ok = 0;
                if (!failing) {
                    ngx_xmpp_audit_thread_error(a, "shipping to MariaDB",
                                                err);
                }
            }

            failing = !ok;
            ngx_xmpp_audit_ship_stats(a, sh, caud_shipper_shipped_seq(sh, id),
                                      ok);

            shipped = caud_shipper_shipped_seq(sh, id);

            if (since_probe >= NGX_XMPP_AUDIT_PROBE_EVERY || stop) {
                since_probe = 0;

                if (caud_journal_written_seq(j) > shipped) {
                    ngx_xmpp_audit_probe(a, id, shipped);

                } else if (a->slot) {
                    __atomic_store_n(&a->slot->backlog_bytes, 0,
                                     __ATOMIC_RELAXED);
                    __atomic_store_n(&a->slot->oldest_unshipped_us, 0,
                                     __ATOMIC_RELAXED);
                }
            }
        }

        if (ok && since_adopt >= NGX_XMPP_AUDIT_ADOPT_EVERY) {
            since_adopt = 0;
            ngx_xmpp_audit_adopt(a, sh);
        }

        if (stop) {
            break;
        }

        if (got > 0 && (uint64_t) got >= a->xcf->ship_batch) {
            continue;
        }

        /* idle or failing: wait a little, or until told to stop */
        ms = ok ? a->xcf->ship_interval : 1000;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }

        pthread_mutex_lock(&a->mu);
        if (!a->stop) {
            (void) pthread_cond_timedwait(&a->ship_cond, &a->mu, &ts);
        }
        pthread_mutex_unlock(&a->mu);

        since_adopt += ms;
        since_probe += ms;
    }

    if (sh) {
        caud_shipper_free(sh);
    }

    mysql_thread_end();

    return NULL;
}


/* ------------------------------------------------------------------ */
/* the event loop: records, the pending ring, wake-ups */

static void
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

    ngx_xmpp_audit_drain(a, failed);

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
static void
ngx_xmpp_audit_drain(ngx_xmpp_audit_t *a, ngx_uint_t failed)
{
    u_char                    *p;
    uint64_t                   durable;
    ngx_uint_t                 ok;
    ngx_xmpp_session_t        *s;
    ngx_xmpp_delivery_t        d;
    ngx_xmpp_audit_pending_t  *e;

    if (a->journal == NULL || a->used == 0) {
        return;
    }

    durable = caud_journal_durable_seq(a->journal);

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
static u_char *
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


static ngx_int_t
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
static ngx_int_t
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
static ngx_int_t
ngx_xmpp_audit_append_batch(ngx_xmpp_audit_t *a, caud_flat_t *rec,
    uint64_t *seq)
{
    if (a == NULL || a->journal == NULL) {
        errno = EIO;
        return NGX_ERROR;
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
static void
ngx_xmpp_audit_flush_handler(ngx_event_t *ev)
{
    ngx_xmpp_audit_flush(ev->data);
}


static void
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
        a->sync_wanted = 1;
        pthread_cond_signal(&a->cond);
    }

    pthread_mutex_unlock(&a->mu);
}


static void
ngx_xmpp_audit_actor(ngx_xmpp_session_t *s, caud_actor_t *act, char *user,
    size_t size)
{
    ngx_memzero(act, sizeof(caud_actor_t));

    if (s->jid.bare.len) {
        ngx_snprintf((u_char *) user, size - 1, "%V%Z", &s->jid.bare);

    } else if (s->user.len) {
        ngx_snprintf((u_char *) user, size - 1, "%V@%V%Z", &s->user,
                     &s->conf->domain);
    } else {
        user[0] = '\0';
    }

    user[size - 1] = '\0';

    act->user = user[0] ? user : NULL;
    act->session_id = (const char *) s->audit_sid;
    act->ip = (const char *) s->audit_ip;
    act->transport = (const char *) s->transport->name.data;
    act->client = s->jid.resource.len ? (const char *) s->audit_resource
                                      : NULL;
}


/* user: room for the actor's name, which rec points to */
static void
ngx_xmpp_audit_record(ngx_xmpp_session_t *s, caud_flat_t *rec,
    const char *event, caud_status_e status, char *user, size_t size)
{
    ngx_memzero(rec, sizeof(caud_flat_t));

    rec->event = event;
    rec->status = status;
    rec->ts_utc_us = caud_now_us();

    ngx_xmpp_audit_actor(s, &rec->actor, user, size);
}


/* a param, also an empty one (as the jansson setters had it); the
 * caller keeps v alive */
static void
ngx_xmpp_audit_param(caud_flat_t *rec, const char *key, ngx_str_t *v)
{
    if (rec->nparams < CAUD_FLAT_PARAMS) {
        rec->params[rec->nparams].key = key;
        rec->params[rec->nparams].s = v->len ? (const char *) v->data : "";
        rec->params[rec->nparams].len = v->len;
        rec->nparams++;
    }
}


/* the text of the message's first <body/> (RFC 6121 5.2.3) */
static void
ngx_xmpp_audit_body(ngx_xmpp_stanza_t *st, ngx_str_t *body,
    ngx_uint_t *has)
{
    ngx_xmpp_node_t  *b;

    *has = 0;

    b = ngx_xmpp_node_child(st->node, "body", NGX_XMPP_NS_CLIENT);

    if (b && ngx_xmpp_node_text(st->pool, b, body) == NGX_OK) {
        *has = 1;
    }
}


/*
 * The message record, then either routing now or a place in the ring
 * until the record is durable.  On any failure the sender gets an error
 * stanza and the message goes nowhere: <resource-constraint/> when the
 * disk is full or the ring is (retry later), <internal-server-error/>
 * when the journal is unusable.
 */
void
ngx_xmpp_audit_message(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_delivery_t *d)
{
    u_char                    *p;
    char                       user[3 * NGX_XMPP_JID_PART_MAX + 4];
    size_t                     size;
    uint64_t                   seq;
    ngx_str_t                  body, stanza, replace_id, retract_id,
                               retract_ns;
    caud_flat_t                rec;
    ngx_uint_t                 has_body, always;
    ngx_xmpp_audit_t          *a;
    ngx_xmpp_audit_pending_t  *e;

    a = ngx_xmpp_audit_worker;
    always = (s->conf->audit_fsync == NGX_XMPP_FSYNC_ALWAYS);

    size = ngx_align(sizeof(ngx_xmpp_audit_pending_t) + d->to.full.len
                     + d->type.len + d->id.len + d->len, 8);
    p = NULL;

    if (a && always) {
        p = ngx_xmpp_audit_ring_reserve(a, size);

        if (p == NULL) {
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "xmpp: audit ring full, message refused");
            if (a->slot) {
                a->slot->refused++;
            }
            ngx_xmpp_router_bounce(s, d, "wait", "resource-constraint");
            return;
        }
    }

    ngx_xmpp_audit_record(s, &rec, "message", CAUD_SUCCESS, user,
                          sizeof(user));

    ngx_xmpp_audit_body(st, &body, &has_body);

    /* XEP-0308/0424: what the history applies (ngx_xmpp_mam.c) */
    (void) ngx_xmpp_mam_refs(st, &replace_id, &retract_id, &retract_ns);

    if (replace_id.len) {
        ngx_xmpp_audit_param(&rec, "replace_id", &replace_id);
    }

    if (retract_id.len) {
        ngx_xmpp_audit_param(&rec, "retract_id", &retract_id);
        ngx_xmpp_audit_param(&rec, "retract_ns", &retract_ns);
    }

    rec.object_type = "jid";
    rec.object_id = (const char *) d->to.full.data;
    rec.object_id_len = d->to.full.len;

    ngx_xmpp_audit_param(&rec, "to", &d->to.full);
    ngx_xmpp_audit_param(&rec, "from", &s->jid.full);

    if (d->type.len) {
        ngx_xmpp_audit_param(&rec, "type", &d->type);
    }

    if (d->id.len) {
        ngx_xmpp_audit_param(&rec, "id", &d->id);
    }

    if (has_body) {
        ngx_xmpp_audit_param(&rec, "body", &body);
    }

    stanza.data = d->data;
    stanza.len = d->len;
    ngx_xmpp_audit_param(&rec, "stanza", &stanza);

    if ((always ? ngx_xmpp_audit_append_batch(a, &rec, &seq)
                : ngx_xmpp_audit_append_flat(a, &rec, &seq))
        != NGX_OK)
    {
        goto failed;
    }

    if (!always) {
        ngx_xmpp_router_deliver(s->conf, s, d);
        return;
    }

    e = (ngx_xmpp_audit_pending_t *) p;
    e->seq = seq;
    e->lost = 0;
    e->sid = s->id;
    e->size = (uint32_t) size;
    e->kind = (uint16_t) d->kind;
    e->to_len = (uint16_t) d->to.full.len;
    e->bare_len = (uint16_t) d->to.bare.len;
    e->local_len = (uint16_t) d->to.local.len;
    e->type_len = (uint16_t) d->type.len;
    e->id_len = (uint16_t) d->id.len;
    e->data_len = (uint32_t) d->len;

    /* absent attributes have NULL data: no zero-length copies from it */
    p += sizeof(ngx_xmpp_audit_pending_t);
    p = ngx_cpymem(p, d->to.full.data, d->to.full.len);

    if (d->type.len) {
        p = ngx_cpymem(p, d->type.data, d->type.len);
    }

    if (d->id.len) {
        p = ngx_cpymem(p, d->id.data, d->id.len);
    }

    ngx_memcpy(p, d->data, d->len);

    a->tail = (a->tail + size) % a->ring_size;
    a->used += size;

    return;

failed:

    if (a && a->slot) {
        a->slot->refused++;
    }

    if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                      "xmpp: audit journal full, message refused");
        ngx_xmpp_router_bounce(s, d, "wait", "resource-constraint");
        return;
    }

    ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                  "xmpp: audit journal write failed, message refused: %s",
                  a && a->journal ? caud_journal_error(a->journal)
                                  : "no journal");
    ngx_xmpp_router_bounce(s, d, "wait", "internal-server-error");
}


/*
 * The identity of the record the next append will write,
 * "<node>:<writer>:<seq>", which is the message's XEP-0359 stanza id
 * and its MAM id (ngx_xmpp_mam.c).  Only the event loop appends, so
 * nothing can take the seq between this call and the append.  Returns
 * the length, 0 when there is no journal.
 */
size_t
ngx_xmpp_audit_next_id(ngx_xmpp_conf_t *xcf, u_char *buf, size_t size)
{
    u_char            *p;
    ngx_xmpp_audit_t  *a;

    a = ngx_xmpp_audit_worker;

    if (a == NULL || a->journal == NULL) {
        return 0;
    }

    p = ngx_snprintf(buf, size, "%V:%uD:%uL", &xcf->audit_node,
                     a->writer_id, caud_journal_next_seq(a->journal));

    return p == buf + size ? 0 : (size_t) (p - buf);
}


/*
 * A record whose consequences wait for it as a message's delivery does
 * (group chat, ngx_xmpp_muc.c): done(data, len, ok) runs once the record
 * is durable with "conclave_audit_fsync always", at once otherwise or
 * without an audit journal; ok is 0 when the journal failed before the
 * record became durable.  done may be NULL (a record with no follow-up).
 * NGX_OK: recorded (done will run); NGX_BUSY: the ring of waiting
 * entries is full; NGX_ERROR: the record could not be written.
 */
ngx_int_t
ngx_xmpp_audit_defer(ngx_xmpp_conf_t *xcf, json_t *rec,
    ngx_xmpp_audit_done_pt done, u_char *data, size_t len, ngx_log_t *log)
{
    u_char                    *p;
    size_t                     size;
    uint64_t                   seq;
    ngx_xmpp_audit_t          *a;
    ngx_xmpp_audit_pending_t  *e;

    if (xcf->audit_zone == NULL) {
        if (done) {
            done(data, len, 1);
        }
        return NGX_OK;
    }

    a = ngx_xmpp_audit_worker;
    size = ngx_align(sizeof(ngx_xmpp_audit_pending_t) + len, 8);
    p = NULL;

    if (a && done && xcf->audit_fsync == NGX_XMPP_FSYNC_ALWAYS) {
        p = ngx_xmpp_audit_ring_reserve(a, size);

        if (p == NULL) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "xmpp: audit ring full, room event refused");
            if (a->slot) {
                a->slot->refused++;
            }
            return NGX_BUSY;
        }
    }

    if (ngx_xmpp_audit_append(a, rec, &seq) != NGX_OK) {
        if (a && a->slot) {
            a->slot->refused++;
        }

        ngx_log_error(NGX_LOG_ERR, log, errno,
                      "xmpp: audit journal write failed, room event "
                      "refused: %s",
                      a && a->journal ? caud_journal_error(a->journal)
                                      : "no journal");
        return NGX_ERROR;
    }

    if (p == NULL) {
        if (done) {
            done(data, len, 1);
        }
        return NGX_OK;
    }

    e = (ngx_xmpp_audit_pending_t *) p;
    ngx_memzero(e, sizeof(ngx_xmpp_audit_pending_t));
    e->seq = seq;
    e->size = (uint32_t) size;
    e->kind = NGX_XMPP_AUDIT_DEFERRED;
    e->done = done;
    e->data_len = (uint32_t) len;

    if (len) {
        ngx_memcpy(p + sizeof(ngx_xmpp_audit_pending_t), data, len);
    }

    a->tail = (a->tail + size) % a->ring_size;
    a->used += size;

    return NGX_OK;
}


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


/*
 * RFC 6120 6.4.5 outcomes and our own refusals: every attempt is a
 * record.  A success that cannot be recorded is refused (the caller
 * turns NGX_ERROR into <temporary-auth-failure/>).
 */
ngx_int_t
ngx_xmpp_audit_signin(ngx_xmpp_session_t *s, ngx_uint_t ok,
    const char *code, const char *reason)
{
    char         user[3 * NGX_XMPP_JID_PART_MAX + 4];
    uint64_t     seq;
    caud_flat_t  rec;

    if (s->conf->audit_zone == NULL) {
        return NGX_OK;
    }

    ngx_xmpp_audit_record(s, &rec, "signin", ok ? CAUD_SUCCESS : CAUD_FAIL,
                          user, sizeof(user));

    if (!ok) {
        rec.error_code = code;
        rec.error_description = reason;
    }

    /* a success says how it was verified when not by the directory */
    if (ok && reason) {
        rec.params[0].key = "via";
        rec.params[0].s = reason;
        rec.params[0].len = ngx_strlen(reason);
        rec.nparams = 1;
    }

    if (ngx_xmpp_audit_append_flat(ngx_xmpp_audit_worker, &rec, &seq)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                      "xmpp: sign-in record not written");
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_xmpp_audit_session_end(ngx_xmpp_session_t *s)
{
    char         user[3 * NGX_XMPP_JID_PART_MAX + 4];
    uint64_t     seq;
    ngx_str_t    reason;
    caud_flat_t  rec;

    if (s->conf->audit_zone == NULL || !s->authenticated) {
        return;
    }

    ngx_xmpp_audit_record(s, &rec, "session_end", CAUD_SUCCESS, user,
                          sizeof(user));

    reason.data = (u_char *) (s->end_reason ? s->end_reason
                                            : "connection-lost");
    reason.len = ngx_strlen(reason.data);
    ngx_xmpp_audit_param(&rec, "reason", &reason);

    if (ngx_xmpp_audit_append_flat(ngx_xmpp_audit_worker, &rec, &seq)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                      "xmpp: session end record not written");
    }
}


/*
 * A console action (ngx_xmpp_admin*.c): sign-ins, searches with their
 * query, views, refusals.  The auditors are audited in the same chain
 * as the messages they read (issue 8 item 4).  params is stolen.  A
 * caller that cannot record the action must not perform it.
 */
ngx_int_t
ngx_xmpp_audit_admin(ngx_xmpp_conf_t *xcf, ngx_log_t *log, const char *user,
    const char *ip, const char *sid, const char *action, ngx_uint_t ok,
    const char *error, json_t *params)
{
    json_t        *rec, *v;
    uint64_t       seq;
    const char    *key;
    caud_actor_t   act;

    rec = NULL;

    if (xcf->audit_zone == NULL) {
        goto failed;
    }

    rec = caud_record_new("admin", ok ? CAUD_SUCCESS : CAUD_FAIL,
                          caud_now_us());
    if (rec == NULL) {
        goto failed;
    }

    ngx_memzero(&act, sizeof(caud_actor_t));
    act.user = user;
    act.ip = ip;
    act.session_id = sid;
    act.transport = "admin";

    if (caud_record_set_actor(rec, &act) != 0
        || caud_record_set_object(rec, "console", action) != 0
        || (error && caud_record_set_error(rec, error, NULL) != 0))
    {
        goto failed;
    }

    if (params) {
        json_object_foreach(params, key, v) {
            if (caud_record_set_param(rec, key, json_incref(v)) != 0) {
                goto failed;
            }
        }
    }

    if (ngx_xmpp_audit_append(ngx_xmpp_audit_worker, rec, &seq) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, errno,
                      "xmpp: console action record not written");
        goto failed;
    }

    json_decref(rec);

    if (params) {
        json_decref(params);
    }

    return NGX_OK;

failed:

    if (rec) {
        json_decref(rec);
    }

    if (params) {
        json_decref(params);
    }

    return NGX_ERROR;
}


/* the strings a record needs, kept with the session */
ngx_int_t
ngx_xmpp_audit_session_init(ngx_xmpp_session_t *s)
{
    ngx_connection_t  *c;

    c = s->connection;

    s->audit_ip = ngx_pnalloc(s->pool, c->addr_text.len + 1);
    if (s->audit_ip == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(s->audit_ip, c->addr_text.data, c->addr_text.len) = '\0';

    *ngx_cpymem(s->audit_sid, s->stream_id, sizeof(s->stream_id)) = '\0';

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_audit_session_bound(ngx_xmpp_session_t *s)
{
    s->audit_resource = ngx_pnalloc(s->pool, s->jid.resource.len + 1);
    if (s->audit_resource == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(s->audit_resource, s->jid.resource.data,
                s->jid.resource.len) = '\0';

    return NGX_OK;
}


/* conclave_health: this worker has a journal to write records to */
ngx_int_t
ngx_xmpp_audit_writable(void)
{
    return ngx_xmpp_audit_worker != NULL
           && ngx_xmpp_audit_worker->journal != NULL;
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

        json_array_append_new(list, item);
    }

    return list;
}
