
/*
 * The shipper thread: moves this worker's journal into MariaDB
 * (caud_shipper_*, audit/src/caud_ship.c) once its records are durable,
 * adopts the journals of workers that are gone, and keeps the lag and
 * backlog figures of conclave_status.  It has its own MariaDB
 * connection, so a slow or dead MariaDB never reaches the event loop.
 */


#include "ngx_xmpp_audit.h"

#include <mysql.h>


/* ------------------------------------------------------------------ */
/* the shipper thread */

/*
 * The bytes of records in a segment file: the live one may be longer
 * than its records (the journal's preallocated zeros).
 */
static uint64_t
ngx_xmpp_audit_seg_bytes(caud_journal_t *j, uint32_t id, const char *name,
    uint64_t size)
{
    char      live[64];
    uint64_t  first, end;

    caud_journal_live_end(j, &first, &end);

    snprintf(live, sizeof(live), "journal-%u-%020llu.cj", (unsigned) id,
             (unsigned long long) first);

    if (ngx_strcmp(live, name) == 0 && size > end) {
        return end;
    }

    return size;
}


/*
 * The shipping lag and the byte backlog: the time of the first record
 * MariaDB lacks, and the bytes from it to the end of the journal (its
 * segment's rest plus every later segment; 20-digit names sort by seq).
 */
static void
ngx_xmpp_audit_probe(ngx_xmpp_audit_t *a, caud_journal_t *j, uint32_t id,
    uint64_t shipped)
{
    DIR            *dir;
    char            err[320], path[4096], prefix[64], first[256];
    size_t          plen;
    json_t         *rec, *ts;
    int64_t         oldest;
    uint64_t        bytes, size;
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

    if (stat(path, &st) == 0) {
        size = ngx_xmpp_audit_seg_bytes(j, id, first, st.st_size);
        bytes = size > f.offset ? size - f.offset : 0;
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
                bytes += ngx_xmpp_audit_seg_bytes(j, id, de->d_name,
                                                  st.st_size);
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
        if (__atomic_load_n(&a->ship_cancel, __ATOMIC_ACQUIRE)) {
            break;
        }

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
    __atomic_store_n(&a->slot->ship_buffer_bytes, st.buffer_bytes,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&a->slot->ship_buffer_peak, st.buffer_peak,
                     __ATOMIC_RELAXED);

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
        return NULL;
    }

    caud_shipper_set_cancel(sh, &a->ship_cancel);

    return sh;
}


/*
 * Ships what is durable, in batches of conclave_audit_ship_batch; while
 * MariaDB fails it retries every second and chat goes on.
 */
void *
ngx_xmpp_audit_ship_thread(void *data)
{
    ngx_xmpp_audit_t *a = data;

    char             err[320];
    int64_t          got;
    uint32_t         id;
    uint64_t         durable, shipped, ms, now, probed, adopted,
                     since_adopt, since_probe;
    ngx_uint_t       stop, ok, failing, known;
    caud_journal_t  *j;
    caud_shipper_t  *sh;
    struct timespec  ts;

    (void) mysql_thread_init();
    (void) pthread_setname_np(pthread_self(), "conclave-ship");

    known = 0;

    sh = ngx_xmpp_audit_shipper(a);
    /*
     * The probe and the adoption go by the clock: a shipper that is
     * never idle (a backlog) still refreshes the lag and the backlog
     * of the status page, which is when they matter.
     */
    probed = ngx_xmpp_audit_now_us() / 1000;
    adopted = probed - NGX_XMPP_AUDIT_ADOPT_EVERY;
    failing = 0;

    while (sh) {
        now = ngx_xmpp_audit_now_us() / 1000;
        since_probe = now - probed;
        since_adopt = now - adopted;

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

            /* a backlog is over: its batches' buffers go back to malloc */
            if (got == 0 && caud_shipper_shrink(sh) > 0) {
                __atomic_store_n(&a->ship_released, 1, __ATOMIC_RELEASE);
                ngx_xmpp_audit_ship_stats(a, sh, shipped, ok);
            }

            if (since_probe >= NGX_XMPP_AUDIT_PROBE_EVERY || stop) {
                probed = now;

                if (caud_journal_written_seq(j) > shipped) {
                    ngx_xmpp_audit_probe(a, j, id, shipped);

                } else if (a->slot) {
                    __atomic_store_n(&a->slot->backlog_bytes, 0,
                                     __ATOMIC_RELAXED);
                    __atomic_store_n(&a->slot->oldest_unshipped_us, 0,
                                     __ATOMIC_RELAXED);
                }
            }
        }

        if (ok && !stop && since_adopt >= NGX_XMPP_AUDIT_ADOPT_EVERY) {
            adopted = now;
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

    }

    if (sh) {
        caud_shipper_free(sh);
    }

    mysql_thread_end();

    return NULL;
}
