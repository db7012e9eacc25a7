
/*
 * The audit journal: an append-only, CRC-checked, hash-chained log per
 * writer (DESIGN.md "Durable before delivery", COMPLIANCE.md 4 and 7.1).
 * The reader that verifies it is caud_journal_read.c; what the two
 * share is caud_journal_int.h.
 *
 * Segment file, all integers little-endian:
 *
 *   header, 64 bytes
 *      0   8  magic "CAUDSEG1"
 *      8   4  format version, 1
 *     12   4  writer_id
 *     16   8  first_seq
 *     24  32  prev_hash: entry_hash of first_seq - 1 (zeros for seq 1)
 *     56   4  reserved, 0
 *     60   4  CRC32C of bytes 0..59
 *
 *   frames, 88 + N + 4 bytes each
 *      0   4  magic "CJR1"
 *      4   4  N, payload length, <= CAUD_MAX_RECORD
 *      8   8  seq
 *     16   2  type, 1 = record
 *     18   2  flags, 0
 *     20   4  CRC32C of bytes 0..19
 *     24  32  prev_hash
 *     56  32  entry_hash = SHA-256(0x00 || payload || prev_hash)
 *     88   N  payload: the record's canonical JSON
 *   88+N   4  CRC32C of bytes 0..87+N
 *
 * The header carries its own CRC so that a damaged length field is
 * told apart from a torn write: a torn tail has a valid header and too
 * few bytes after it; a flipped length bit fails the header CRC.  The
 * segment header binds the file to its writer and holds the chain
 * anchor, so a segment still verifies, and a writer still resumes,
 * after retention has removed the segments before it.
 *
 * CRC32C (Castagnoli) rather than zlib's CRC32: the same strength
 * against bit flips and bursts, and the SSE4.2 instruction makes it
 * nearly free.
 */


#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "caud_journal_int.h"


#define CAUD_JOURNAL_BATCH_MAX  (256 * 1024)    /* batched frame bytes */


struct caud_journal_s {
    char                 *dir;
    uint32_t              writer_id;
    caud_journal_opts_t   opts;

    int                   lock_fd;
    int                   dir_fd;
    int                   fd;           /* current segment; see mu */

    uint64_t              seg_first;
    uint64_t              seg_off;      /* bytes written to the segment */
    uint64_t              alloc_end;    /* zeros written up to here */
    int                   alloc_failed; /* no prealloc in this segment */
    uint64_t              pub_first;    /* seg_first and seg_off for */
    uint64_t              pub_end;      /* other threads, under mu */
    uint64_t              last_seq;     /* appended, maybe not written */
    uint8_t               head[CAUD_HASH_LEN];
    uint8_t               whead[CAUD_HASH_LEN];  /* head at written_seq */

    /* buf holds the frames appended with _append_flat_batch() and not
     * yet written (pend bytes, written at seg_off by the next flush or
     * immediate append), then the frame being built */
    caud_buf_t            buf;
    size_t                pend;
    caud_hasher_t        *hasher;

    atomic_int            failed;
    _Atomic uint64_t      written_seq;
    _Atomic uint64_t      durable_seq;

    /* mu guards fd, retired[] and dir_dirty between the owner's
     * rotation and a sync's snapshot; sync_mu makes syncs take turns,
     * and is what keeps a retired fd open while a sync uses it */
    pthread_mutex_t       mu;
    pthread_mutex_t       sync_mu;
    int                   retired[CAUD_RETIRED_MAX];
    int                   nretired;
    int                   dir_dirty;

    char                  err[320];
};


const uint8_t  caud_zero_hash[CAUD_HASH_LEN];


/* ------------------------------------------------------------------ */
/* CRC32C, RFC 3720 B.4: reflected 0x82F63B78, ~0 in and out */

static uint32_t  caud_crc_table[256];
static int       caud_crc_hw;
static pthread_once_t  caud_crc_once = PTHREAD_ONCE_INIT;


static void
caud_crc_init(void)
{
    uint32_t  c, i, k;

    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78 : c >> 1;
        }
        caud_crc_table[i] = c;
    }

#if defined(__x86_64__)
    caud_crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}


#if defined(__x86_64__)

__attribute__((target("sse4.2")))
static uint32_t
caud_crc_sse42(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t  c, v;

    c = crc;

    while (n >= 8) {
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }

    while (n--) {
        c = __builtin_ia32_crc32qi((uint32_t) c, *p++);
    }

    return (uint32_t) c;
}

#endif


/* the CRC32C of n bytes, with SSE4.2 where the CPU has it */
uint32_t
caud_crc32c(const uint8_t *p, size_t n)
{
    uint32_t  c;

    pthread_once(&caud_crc_once, caud_crc_init);

    c = 0xFFFFFFFF;

#if defined(__x86_64__)
    if (caud_crc_hw) {
        return ~caud_crc_sse42(c, p, n);
    }
#endif

    while (n--) {
        c = caud_crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    }

    return ~c;
}


/* ------------------------------------------------------------------ */
/* helpers */

/* a message that may be cut short: paths can be long, err buffers not */
void
caud_strf(char *buf, size_t size, const char *fmt, ...)
{
    va_list  ap;

    if (buf == NULL || size == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}



static void
caud_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}


static void
caud_put64(uint8_t *p, uint64_t v)
{
    caud_put32(p, (uint32_t) v);
    caud_put32(p + 4, (uint32_t) (v >> 32));
}


static void
caud_seg_header(uint8_t *h, uint32_t writer_id, uint64_t first,
    const uint8_t *prev)
{
    memset(h, 0, CAUD_SEGMENT_HDR_LEN);
    memcpy(h, CAUD_SEG_MAGIC, 8);
    caud_put32(h + 8, CAUD_VERSION);
    caud_put32(h + 12, writer_id);
    caud_put64(h + 16, first);
    memcpy(h + 24, prev, CAUD_HASH_LEN);
    caud_put32(h + 60, caud_crc32c(h, 60));
}


static int
caud_pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    ssize_t  w;

    while (n) {
        w = pwrite(fd, p, n, (off_t) off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }

        p += w;
        n -= w;
        off += w;
    }

    return 0;
}


/* ------------------------------------------------------------------ */
/* writer */

static int
caud_journal_fail(caud_journal_t *j, const char *what, const char *path)
{
    int  e = errno;

    caud_strf(j->err, sizeof(j->err), "%s%s%s: %s", what, path ? " " : "",
              path ? path : "", strerror(e));
    errno = e;
    return -1;
}


static int
caud_seg_create(caud_journal_t *j, uint64_t first, const uint8_t *prev)
{
    int      fd, e;
    char     path[PATH_MAX];
    uint8_t  h[CAUD_SEGMENT_HDR_LEN];

    if (caud_seg_path(path, sizeof(path), j->dir, j->writer_id, first) != 0)
    {
        errno = ENAMETOOLONG;
        return caud_journal_fail(j, "segment path", j->dir);
    }

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
              j->opts.mode);
    if (fd < 0) {
        return caud_journal_fail(j, "create", path);
    }

    caud_seg_header(h, j->writer_id, first, prev);

    if (caud_pwrite_all(fd, h, sizeof(h), 0) != 0) {
        e = errno;
        unlink(path);
        close(fd);
        errno = e;
        return caud_journal_fail(j, "write", path);
    }

    return fd;
}


/*
 * Zeros from alloc_end (or the data's end) up to need + prealloc, capped
 * at the segment size, with one pwritev(2): about once per prealloc
 * bytes of records.  Best effort: a failure (ENOSPC...) only stops the
 * preallocation in this segment, the record write reports for itself.
 */
static void
caud_journal_prealloc(caud_journal_t *j, uint64_t need)
{
    int           n;
    size_t        len;
    uint64_t      from, to;
    ssize_t       w;
    struct iovec  iov[64];

    static const uint8_t  zeros[64 * 1024];

    from = j->alloc_end > need ? j->alloc_end : need;
    to = need + j->opts.prealloc;

    if (to > j->opts.segment_size) {
        to = j->opts.segment_size;
    }

    while (from < to) {
        len = to - from;

        for (n = 0; n < 64 && len; n++) {
            iov[n].iov_base = (void *) zeros;
            iov[n].iov_len = len < sizeof(zeros) ? len : sizeof(zeros);
            len -= iov[n].iov_len;
        }

        w = pwritev(j->fd, iov, n, (off_t) from);

        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }

            j->alloc_failed = 1;
            break;
        }

        from += (uint64_t) w;
    }

    j->alloc_end = from;
}


/* the zeros after the last frame go: a sealed or closed segment ends at
 * its last frame, as readers expect */
static int
caud_journal_cut_prealloc(caud_journal_t *j)
{
    if (j->alloc_end <= j->seg_off) {
        return 0;
    }

    j->alloc_end = j->seg_off;

    if (ftruncate(j->fd, (off_t) j->seg_off) != 0) {
        return caud_journal_fail(j, "truncate", j->dir);
    }

    return 0;
}


/* a new segment for the next frame; the old fd goes to the syncer */
static int
caud_journal_rotate(caud_journal_t *j)
{
    int  fd, old;

    if (!j->opts.no_sync) {
        pthread_mutex_lock(&j->mu);
        old = j->nretired;
        pthread_mutex_unlock(&j->mu);

        if (old == CAUD_RETIRED_MAX) {
            /* back pressure: a stuck disk or a dead sync thread must
             * refuse messages rather than queue unsynced data forever */
            caud_strf(j->err, sizeof(j->err), "%d segments await sync",
                     CAUD_RETIRED_MAX);
            errno = EAGAIN;
            return -1;
        }
    }

    if (caud_journal_cut_prealloc(j) != 0) {
        return -1;
    }

    fd = caud_seg_create(j, j->last_seq + 1, j->head);
    if (fd < 0) {
        return -1;
    }

    pthread_mutex_lock(&j->mu);

    j->pub_first = j->last_seq + 1;
    j->pub_end = CAUD_SEGMENT_HDR_LEN;

    old = j->fd;
    if (!j->opts.no_sync) {
        j->retired[j->nretired++] = old;
        old = -1;
    }

    j->fd = fd;
    j->dir_dirty = 1;

    pthread_mutex_unlock(&j->mu);

    if (old >= 0) {
        close(old);
    }

    j->seg_first = j->last_seq + 1;
    j->seg_off = CAUD_SEGMENT_HDR_LEN;
    j->alloc_end = CAUD_SEGMENT_HDR_LEN;
    j->alloc_failed = 0;

    return 0;
}


/*
 * Writes the pend bytes of batched frames and the n bytes after them
 * with one pwrite(2).  On failure nothing of them stays: the file is
 * cut back, and last_seq and the head go back to the last written
 * frame, so the seqs of the lost frames are reused and the chain stays
 * unbroken.
 */
static int
caud_journal_pwrite(caud_journal_t *j, size_t n, uint64_t s)
{
    int       e;
    uint64_t  end;

    end = j->seg_off + j->pend + n;

    if (j->opts.prealloc && end > j->alloc_end && !j->alloc_failed) {
        caud_journal_prealloc(j, end);
    }

    if (caud_pwrite_all(j->fd, j->buf.data, j->pend + n, j->seg_off) != 0)
    {
        e = errno;

        /* cut the partial frames off, so the next append does not land
         * behind garbage; if even that fails the file is unusable */
        if (ftruncate(j->fd, (off_t) j->seg_off) != 0) {
            atomic_store(&j->failed, 1);
        }

        j->alloc_end = j->seg_off;

        j->pend = 0;
        j->last_seq = atomic_load(&j->written_seq);
        memcpy(j->head, j->whead, CAUD_HASH_LEN);

        errno = e;
        return caud_journal_fail(j, "append to segment", NULL);
    }

    j->seg_off = end;
    j->pend = 0;
    memcpy(j->whead, j->head, CAUD_HASH_LEN);

    if (j->opts.prealloc) {
        pthread_mutex_lock(&j->mu);
        j->pub_end = end;
        pthread_mutex_unlock(&j->mu);
    }

    /* release: a sync that sees s also sees the write that made it */
    atomic_store_explicit(&j->written_seq, s, memory_order_release);

    return 0;
}


/* writes the batch and moves the len payload bytes after it down */
static int
caud_journal_write_batch(caud_journal_t *j, size_t len)
{
    size_t  pend;

    pend = j->pend;

    if (caud_journal_pwrite(j, 0, j->last_seq) != 0) {
        return -1;
    }

    memmove(j->buf.data + CAUD_FRAME_HDR_LEN,
            j->buf.data + pend + CAUD_FRAME_HDR_LEN, len);

    return 0;
}


/*
 * Frames the len payload bytes at buf + pend + 88 and writes them, with
 * the batched frames before them; with batch set the frame joins the
 * batch instead.  A batched frame always stays in the batch until
 * caud_journal_flush(): when it would take the batch past
 * CAUD_JOURNAL_BATCH_MAX the frames before it are written and it starts
 * the next batch.  The caller asks for the sync after its flush, so a
 * frame written here, unannounced, would wait for a sync nobody asked
 * for (a turn's last message held until the next record).
 */
static int
caud_journal_write(caud_journal_t *j, size_t len, uint64_t *seq, int batch)
{
    size_t    flen;
    uint8_t  *p;
    uint64_t  s;

    flen = CAUD_FRAME_OVERHEAD + len;

    if (batch && j->pend && j->pend + flen > CAUD_JOURNAL_BATCH_MAX
        && caud_journal_write_batch(j, len) != 0)
    {
        return -1;
    }

    if (j->seg_off + j->pend + flen > j->opts.segment_size
        && j->seg_off + j->pend > CAUD_SEGMENT_HDR_LEN)
    {
        /* the batch ends this segment */
        if (j->pend && caud_journal_write_batch(j, len) != 0) {
            return -1;
        }

        if (caud_journal_rotate(j) != 0) {
            return -1;
        }
    }

    s = j->last_seq + 1;
    p = j->buf.data + j->pend;

    memcpy(p, CAUD_FRAME_MAGIC, 4);
    caud_put32(p + 4, (uint32_t) len);
    caud_put64(p + 8, s);
    p[16] = CAUD_TYPE_RECORD;
    p[17] = 0;
    p[18] = 0;
    p[19] = 0;
    caud_put32(p + 20, caud_crc32c(p, 20));
    memcpy(p + 24, j->head, CAUD_HASH_LEN);

    if (caud_hasher_entry(j->hasher, p + CAUD_FRAME_HDR_LEN, len, j->head,
                          p + 56)
        != 0)
    {
        errno = EIO;
        return caud_journal_fail(j, "SHA-256", NULL);
    }

    caud_put32(p + flen - 4, caud_crc32c(p, flen - 4));

    j->last_seq = s;
    memcpy(j->head, p + 56, CAUD_HASH_LEN);

    if (batch) {
        j->pend += flen;

    } else if (caud_journal_pwrite(j, flen, s) != 0) {
        return -1;
    }

    if (seq) {
        *seq = s;
    }

    return 0;
}


static int
caud_journal_reserve(caud_journal_t *j, size_t len)
{
    size_t    cap;
    uint8_t  *d;

    if (len <= j->buf.cap) {
        return 0;
    }

    cap = j->buf.cap ? j->buf.cap : 4096;
    while (cap < len) {
        cap *= 2;
    }

    d = realloc(j->buf.data, cap);
    if (d == NULL) {
        return -1;
    }

    j->buf.data = d;
    j->buf.cap = cap;

    return 0;
}


int
caud_journal_append(caud_journal_t *j, json_t *rec, uint64_t *seq)
{
    if (atomic_load(&j->failed)) {
        errno = EIO;
        return caud_journal_fail(j, "journal failed", NULL);
    }

    if (json_object_set_new(rec, "seq", json_integer(j->last_seq + 1)) != 0)
    {
        errno = ENOMEM;
        return caud_journal_fail(j, "record", NULL);
    }

    /* the payload is encoded right behind the frame header space */
    j->buf.len = j->pend + CAUD_FRAME_HDR_LEN;

    if (caud_record_encode(rec, &j->buf) != 0) {
        return caud_journal_fail(j, "encode record", NULL);
    }

    if (caud_journal_reserve(j, j->buf.len + 4) != 0) {
        errno = ENOMEM;
        return caud_journal_fail(j, "frame buffer", NULL);
    }

    return caud_journal_write(j, j->buf.len - j->pend - CAUD_FRAME_HDR_LEN,
                              seq, 0);
}


static int
caud_journal_flat(caud_journal_t *j, const caud_flat_t *r, uint64_t *seq,
    int batch)
{
    if (atomic_load(&j->failed)) {
        errno = EIO;
        return caud_journal_fail(j, "journal failed", NULL);
    }

    j->buf.len = j->pend + CAUD_FRAME_HDR_LEN;

    if (caud_flat_encode(r, j->last_seq + 1, &j->buf) != 0) {
        return caud_journal_fail(j, "encode record", NULL);
    }

    if (caud_journal_reserve(j, j->buf.len + 4) != 0) {
        errno = ENOMEM;
        return caud_journal_fail(j, "frame buffer", NULL);
    }

    return caud_journal_write(j, j->buf.len - j->pend - CAUD_FRAME_HDR_LEN,
                              seq, batch);
}


int
caud_journal_append_flat(caud_journal_t *j, const caud_flat_t *r,
    uint64_t *seq)
{
    return caud_journal_flat(j, r, seq, 0);
}


int
caud_journal_append_flat_batch(caud_journal_t *j, const caud_flat_t *r,
    uint64_t *seq)
{
    return caud_journal_flat(j, r, seq, 1);
}


int
caud_journal_flush(caud_journal_t *j)
{
    if (j->pend == 0) {
        return 0;
    }

    if (atomic_load(&j->failed)) {
        j->pend = 0;
        j->last_seq = atomic_load(&j->written_seq);
        memcpy(j->head, j->whead, CAUD_HASH_LEN);
        errno = EIO;
        return caud_journal_fail(j, "journal failed", NULL);
    }

    return caud_journal_pwrite(j, 0, j->last_seq);
}


int
caud_journal_append_raw(caud_journal_t *j, const void *canon, size_t len,
    uint64_t *seq)
{
    if (atomic_load(&j->failed)) {
        errno = EIO;
        return caud_journal_fail(j, "journal failed", NULL);
    }

    if (len > CAUD_MAX_RECORD) {
        errno = EMSGSIZE;
        return caud_journal_fail(j, "record", NULL);
    }

    if (caud_journal_reserve(j, j->pend + CAUD_FRAME_OVERHEAD + len) != 0) {
        errno = ENOMEM;
        return caud_journal_fail(j, "frame buffer", NULL);
    }

    memcpy(j->buf.data + j->pend + CAUD_FRAME_HDR_LEN, canon, len);

    return caud_journal_write(j, len, seq, 0);
}


int
caud_journal_sync(caud_journal_t *j, char *err, size_t errlen)
{
    int         i, n, fd, dirty, rc;
    int         retired[CAUD_RETIRED_MAX];
    uint64_t    target;
    const char  *what;

    if (atomic_load(&j->failed)) {
        caud_strf(err, errlen, "journal failed after an earlier sync error");
        errno = EIO;
        return -1;
    }

    pthread_mutex_lock(&j->sync_mu);

    /* the snapshot: every record <= target sits in a retired segment
     * taken here or in fd, because rotation swaps under mu */
    pthread_mutex_lock(&j->mu);

    target = atomic_load_explicit(&j->written_seq, memory_order_acquire);
    n = j->nretired;
    memcpy(retired, j->retired, n * sizeof(int));
    j->nretired = 0;
    dirty = j->dir_dirty;
    j->dir_dirty = 0;
    fd = j->fd;

    pthread_mutex_unlock(&j->mu);

    rc = 0;
    what = NULL;

    for (i = 0; i < n; i++) {
        if (rc == 0 && fdatasync(retired[i]) != 0) {
            rc = -1;
            what = "fdatasync(retired segment)";
        }

        close(retired[i]);
    }

    if (rc == 0 && dirty && fsync(j->dir_fd) != 0) {
        rc = -1;
        what = "fsync(directory)";
    }

    if (rc == 0 && fdatasync(fd) != 0) {
        rc = -1;
        what = "fdatasync(segment)";
    }

    if (rc == 0) {
        if (target > atomic_load(&j->durable_seq)) {
            atomic_store_explicit(&j->durable_seq, target,
                                  memory_order_release);
        }

    } else {
        caud_strf(err, errlen, "%s %s: %s", what, j->dir, strerror(errno));
        atomic_store(&j->failed, 1);
        errno = EIO;
    }

    pthread_mutex_unlock(&j->sync_mu);

    return rc;
}


void
caud_journal_live_end(caud_journal_t *j, uint64_t *seg_first, uint64_t *end)
{
    pthread_mutex_lock(&j->mu);
    *seg_first = j->pub_first;
    *end = j->pub_end;
    pthread_mutex_unlock(&j->mu);
}


uint64_t
caud_journal_next_seq(caud_journal_t *j)
{
    return j->last_seq + 1;
}


uint64_t
caud_journal_last_seq(caud_journal_t *j)
{
    return j->last_seq;
}


const uint8_t *
caud_journal_head(caud_journal_t *j)
{
    return j->head;
}


uint64_t
caud_journal_written_seq(caud_journal_t *j)
{
    return atomic_load_explicit(&j->written_seq, memory_order_acquire);
}


uint64_t
caud_journal_durable_seq(caud_journal_t *j)
{
    return atomic_load_explicit(&j->durable_seq, memory_order_acquire);
}


const char *
caud_journal_error(caud_journal_t *j)
{
    return j->err;
}


/* fdatasync()s every segment: a crashed writer may have left data that
 * is in the page cache only */
static int
caud_journal_sync_all(caud_journal_t *j, const uint64_t *list, size_t n)
{
    int     fd, rc;
    char    path[PATH_MAX];
    size_t  i;

    for (i = 0; i < n; i++) {
        if (caud_seg_path(path, sizeof(path), j->dir, j->writer_id, list[i])
            != 0)
        {
            errno = ENAMETOOLONG;
            return caud_journal_fail(j, "segment path", j->dir);
        }

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return caud_journal_fail(j, "open", path);
        }

        rc = fdatasync(fd);
        close(fd);

        if (rc != 0) {
            return caud_journal_fail(j, "fdatasync", path);
        }
    }

    if (fsync(j->dir_fd) != 0) {
        return caud_journal_fail(j, "fsync", j->dir);
    }

    return 0;
}


/*
 * Finds where the chain stops in the last segment.  1: resumed, j->fd
 * open for writing; 0: the segment has not even a whole header (a crash
 * right after creating it) and was removed or rewritten; -1: damage.
 */
static int
caud_journal_resume(caud_journal_t *j, uint64_t first, int has_prev)
{
    int             rc, fd;
    uint64_t        end;
    caud_frame_t    f;
    caud_reader_t  *r;

    if (caud_reader_init(&r, j->dir, j->writer_id, first, first) != 0) {
        return caud_journal_fail(j, "open", j->dir);
    }

    while ((rc = caud_reader_next(r, &f)) == 1) {
        /* scan only */
    }

    if (rc < 0) {
        caud_strf(j->err, sizeof(j->err), "%s/%s", j->dir, r->err);
        caud_reader_close(r);
        errno = EILSEQ;
        return -1;
    }

    if (!r->have_header) {
        if (first != 1 && !has_prev) {
            caud_strf(j->err, sizeof(j->err), "%s/%s: no segment header, and "
                     "no earlier segment to take the chain head from",
                     j->dir, r->name);
            caud_reader_close(r);
            errno = EILSEQ;
            return -1;
        }

        /* no record lives in it (a crash right after creating it):
         * drop it, and resume from the previous segment or start over */
        if (unlink(r->path) != 0) {
            caud_journal_fail(j, "unlink", r->path);
            caud_reader_close(r);
            return -1;
        }

        caud_reader_close(r);

        if (has_prev) {
            return 0;
        }

        fd = caud_seg_create(j, 1, caud_zero_hash);
        if (fd < 0) {
            return -1;
        }

        j->fd = fd;
        j->seg_first = 1;
        j->seg_off = CAUD_SEGMENT_HDR_LEN;
        return 1;
    }

    end = r->pos;
    j->last_seq = r->next_seq - 1;
    j->seg_first = first;
    memcpy(j->head, r->head, CAUD_HASH_LEN);

    fd = open(r->path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        caud_journal_fail(j, "open", r->path);
        caud_reader_close(r);
        return -1;
    }

    /* a torn tail is a record whose write never returned: it was never
     * acknowledged, so it is cut off and its seq is reused */
    if (ftruncate(fd, (off_t) end) != 0) {
        caud_journal_fail(j, "truncate", r->path);
        close(fd);
        caud_reader_close(r);
        return -1;
    }

    caud_reader_close(r);

    j->fd = fd;
    j->seg_off = end;

    return 1;
}


int
caud_journal_open(const char *dir, uint32_t writer_id,
    const caud_journal_opts_t *opts, caud_journal_t **jp, char *err,
    size_t errlen)
{
    int              rc;
    char             path[PATH_MAX];
    size_t           n;
    uint64_t        *list;
    caud_journal_t  *j;

    *jp = NULL;
    list = NULL;

    j = calloc(1, sizeof(caud_journal_t));
    if (j == NULL) {
        caud_strf(err, errlen, "out of memory");
        return -1;
    }

    j->lock_fd = -1;
    j->dir_fd = -1;
    j->fd = -1;
    j->writer_id = writer_id;
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->sync_mu, NULL);

    if (opts) {
        j->opts = *opts;
    }

    if (j->opts.segment_size == 0) {
        j->opts.segment_size = CAUD_SEGMENT_SIZE;
    }

    if (j->opts.mode == 0) {
        j->opts.mode = 0600;
    }

    j->dir = strdup(dir);
    j->hasher = caud_hasher_new();

    if (j->dir == NULL || j->hasher == NULL
        || caud_journal_reserve(j, 4096) != 0)
    {
        errno = ENOMEM;
        caud_journal_fail(j, "allocate", NULL);
        goto fail;
    }

    rc = snprintf(path, sizeof(path), "%s/journal-%" PRIu32 ".lock", dir,
                  writer_id);
    if (rc < 0 || (size_t) rc >= sizeof(path)) {
        errno = ENAMETOOLONG;
        caud_journal_fail(j, "lock path", dir);
        goto fail;
    }

    j->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, j->opts.mode);
    if (j->lock_fd < 0) {
        caud_journal_fail(j, "open", path);
        goto fail;
    }

    /* two writers on one chain would fork it: the second one fails */
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        caud_journal_fail(j, "lock (another writer has it)", path);
        goto fail;
    }

    j->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dir_fd < 0) {
        caud_journal_fail(j, "open", dir);
        goto fail;
    }

    if (caud_seg_list(dir, writer_id, &list, &n) != 0) {
        caud_journal_fail(j, "list", dir);
        goto fail;
    }

    for ( ;; ) {
        if (n == 0) {
            j->fd = caud_seg_create(j, 1, caud_zero_hash);
            if (j->fd < 0) {
                goto fail;
            }

            j->seg_first = 1;
            j->seg_off = CAUD_SEGMENT_HDR_LEN;
            break;
        }

        rc = caud_journal_resume(j, list[n - 1], n > 1);
        if (rc < 0) {
            goto fail;
        }

        if (rc == 1) {
            break;
        }

        n--;
    }

    if (caud_journal_sync_all(j, list, n) != 0) {
        goto fail;
    }

    free(list);

    atomic_store(&j->written_seq, j->last_seq);
    atomic_store(&j->durable_seq, j->last_seq);
    memcpy(j->whead, j->head, CAUD_HASH_LEN);
    j->alloc_end = j->seg_off;
    j->pub_first = j->seg_first;
    j->pub_end = j->seg_off;

    *jp = j;

    return 0;

fail:

    caud_strf(err, errlen, "%s", j->err);
    free(list);
    j->opts.no_sync = 1;
    caud_journal_close(j, NULL, 0);
    return -1;
}


int
caud_journal_close(caud_journal_t *j, char *err, size_t errlen)
{
    int   i, rc;
    char  e[256];

    if (j == NULL) {
        return 0;
    }

    rc = 0;

    if (j->fd >= 0 && j->pend && caud_journal_flush(j) != 0) {
        if (err) {
            caud_strf(err, errlen, "%s", j->err);
        }
        rc = -1;
    }

    if (j->fd >= 0 && caud_journal_cut_prealloc(j) != 0) {
        if (err && rc == 0) {
            caud_strf(err, errlen, "%s", j->err);
        }
        rc = -1;
    }

    if (!j->opts.no_sync && j->fd >= 0
        && caud_journal_sync(j, e, sizeof(e)) != 0)
    {
        if (err) {
            caud_strf(err, errlen, "%s", e);
        }
        rc = -1;
    }

    for (i = 0; i < j->nretired; i++) {
        close(j->retired[i]);
    }

    if (j->fd >= 0) {
        close(j->fd);
    }

    if (j->dir_fd >= 0) {
        close(j->dir_fd);
    }

    if (j->lock_fd >= 0) {
        close(j->lock_fd);
    }

    pthread_mutex_destroy(&j->mu);
    pthread_mutex_destroy(&j->sync_mu);
    caud_hasher_free(j->hasher);
    caud_buf_free(&j->buf);
    free(j->dir);
    free(j);

    return rc;
}
