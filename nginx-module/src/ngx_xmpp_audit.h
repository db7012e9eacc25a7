
/*
 * What the files of the module's audit adapter share (ngx_xmpp_audit.c:
 * configuration, worker start and exit, status; ngx_xmpp_audit_journal.c:
 * the event loop's writes, the pending ring and the sync thread's group
 * commit; ngx_xmpp_audit_ship.c: the shipper thread;
 * ngx_xmpp_audit_rec.c: the records).  The public interface stays in
 * ngx_xmpp.h.
 */


#ifndef _NGX_XMPP_AUDIT_H_INCLUDED_
#define _NGX_XMPP_AUDIT_H_INCLUDED_


#include "ngx_xmpp.h"

#include <pthread.h>

#include "caud.h"



#define NGX_XMPP_AUDIT_SLOTS        128
#define NGX_XMPP_AUDIT_ID_STRIDE    64
#define NGX_XMPP_AUDIT_ID_TRIES     16
#define NGX_XMPP_AUDIT_ADOPT_EVERY  5000       /* ms */
#define NGX_XMPP_AUDIT_PROBE_EVERY  2000       /* ms */
#define NGX_XMPP_AUDIT_IDS_MAX      1024
#define NGX_XMPP_AUDIT_PREALLOC     (1024 * 1024)  /* caud_journal_opts_t */


/*
 * Where a message's wait for durability goes (docs/audit.md, "Latency
 * breakdown"), one histogram per stage, each written by one thread:
 *   wait    per message: its record appended -> the message routed
 *   write   per batch: the turn's first record -> its pwrite returned
 *   queue   per sync round: first asked for -> fdatasync starts (the
 *           sync thread's wake-up, and the rest of a round running)
 *   fsync   per sync round: the fdatasync itself
 *   notify  per sync round: fdatasync done -> the eventfd handler runs
 * Buckets are log-linear in microseconds: 4 per power of two.
 */
#define NGX_XMPP_AUDIT_LAT_BUCKETS  64

enum {
    NGX_XMPP_AUDIT_LAT_WAIT = 0,
    NGX_XMPP_AUDIT_LAT_WRITE,
    NGX_XMPP_AUDIT_LAT_QUEUE,
    NGX_XMPP_AUDIT_LAT_FSYNC,
    NGX_XMPP_AUDIT_LAT_NOTIFY,
    NGX_XMPP_AUDIT_LAT_N
};

typedef struct {
    uint64_t               count;
    uint64_t               sum_us;
    uint64_t               max_us;
    uint64_t               bucket[NGX_XMPP_AUDIT_LAT_BUCKETS];
} ngx_xmpp_audit_hist_t;


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
    uint64_t               ship_buffer_bytes;
    uint64_t               ship_buffer_peak;
    ngx_xmpp_audit_hist_t  lat[NGX_XMPP_AUDIT_LAT_N];
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
    uint64_t               t_us;         /* appended (0: not measured) */
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
    int                    ship_cancel;  /* atomic: the worker exits */
    int                    ship_released; /* atomic: a backlog's buffers
                                             were freed */
    ngx_uint_t             sync_wanted;
    uint64_t               cp_seq;       /* checkpoint wanted at this seq */
    uint64_t               sync_t_us;    /* a round first asked for */
    uint64_t               sync_end_us;  /* atomic: the last round's end */
    uint8_t                cp_head[CAUD_HASH_LEN];
    char                   thread_err[512];
    ngx_uint_t             thread_err_new;
    ngx_uint_t             sync_failed;
    caud_journal_t        *opened;       /* retried open, to install */
    uint32_t               opened_id;

    uint64_t               batch_t_us;   /* the turn's first record */

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


/* this worker's adapter; NULL before init_worker and after exit_worker */
extern ngx_xmpp_audit_t  *ngx_xmpp_audit_worker;


/* ngx_xmpp_audit.c */
void ngx_xmpp_audit_install(ngx_xmpp_audit_t *a, caud_journal_t *j,
    uint32_t id, ngx_log_t *log);
void ngx_xmpp_audit_retry_open(ngx_xmpp_audit_t *a);
uint64_t ngx_xmpp_audit_now_us(void);
void ngx_xmpp_audit_lat_add(ngx_xmpp_audit_t *a, ngx_uint_t stage,
    uint64_t t0_us, uint64_t t1_us);

/* ngx_xmpp_audit_journal.c */
void *ngx_xmpp_audit_sync_thread(void *data);
void ngx_xmpp_audit_thread_error(ngx_xmpp_audit_t *a, const char *what,
    const char *err);
void ngx_xmpp_audit_wake(ngx_xmpp_audit_t *a);
void ngx_xmpp_audit_ready(ngx_event_t *ev);
void ngx_xmpp_audit_drain(ngx_xmpp_audit_t *a, ngx_uint_t failed);
u_char *ngx_xmpp_audit_ring_reserve(ngx_xmpp_audit_t *a, size_t size);
ngx_int_t ngx_xmpp_audit_append(ngx_xmpp_audit_t *a, json_t *rec,
    uint64_t *seq);
ngx_int_t ngx_xmpp_audit_append_flat(ngx_xmpp_audit_t *a, caud_flat_t *rec,
    uint64_t *seq);
ngx_int_t ngx_xmpp_audit_append_batch(ngx_xmpp_audit_t *a,
    caud_flat_t *rec, uint64_t *seq);
void ngx_xmpp_audit_flush_handler(ngx_event_t *ev);
void ngx_xmpp_audit_flush(ngx_xmpp_audit_t *a);

/* ngx_xmpp_audit_ship.c */
void *ngx_xmpp_audit_ship_thread(void *data);


#endif /* _NGX_XMPP_AUDIT_H_INCLUDED_ */
