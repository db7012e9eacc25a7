
/*
 * The journal's reader: lists a writer's segments, iterates its frames
 * from any seq, checking each frame's CRCs and the hash chain across
 * segment boundaries, and tells a torn tail (a write in progress or cut
 * by a crash: the end) from corruption (refused with file, offset and
 * seq).  The layout is described at the top of caud_journal.c.
 */


#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caud_journal_int.h"


#define CAUD_FRAME_MIN_HDR  24          /* up to and with the header CRC */
/*
 * What a reader reads at a time; it grows for a longer frame.  A
 * shipper tails its journal with one reader for the worker's life, and
 * with 1 MiB a backlog (MariaDB down, a saturated minute) left the
 * whole buffer touched for good; at 64 KiB a pread() still carries
 * about 90 records of 700 bytes.
 */
#define CAUD_READ_BUF       (64 * 1024)
#define CAUD_NAME_LEN       64


static uint32_t
caud_get32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


static uint64_t
caud_get64(const uint8_t *p)
{
    return (uint64_t) caud_get32(p) | (uint64_t) caud_get32(p + 4) << 32;
}


/* ------------------------------------------------------------------ */
/* segment files */

static void
caud_seg_name(char *buf, size_t size, uint32_t writer_id, uint64_t first)
{
    /* 20 digits: ls(1) and the shipper see segments in seq order */
    snprintf(buf, size, "journal-%" PRIu32 "-%020" PRIu64 ".cj", writer_id,
             first);
}


/* dir/name of writer_id's segment that starts at first; -1 if too long */
int
caud_seg_path(char *buf, size_t size, const char *dir, uint32_t writer_id,
    uint64_t first)
{
    char  name[CAUD_NAME_LEN];
    int   n;

    caud_seg_name(name, sizeof(name), writer_id, first);

    n = snprintf(buf, size, "%s/%s", dir, name);

    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}


static int
caud_cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


/*
 * The first seqs of writer_id's segments, ascending.  Only names this
 * library would write count: anything else in the directory is left
 * alone.
 */
int
caud_seg_list(const char *dir, uint32_t writer_id, uint64_t **out,
    size_t *nout)
{
    DIR            *d;
    char            prefix[CAUD_NAME_LEN], name[CAUD_NAME_LEN], *end;
    size_t          n, cap, plen;
    uint64_t        first, *list, *p;
    struct dirent  *de;

    *out = NULL;
    *nout = 0;

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    plen = snprintf(prefix, sizeof(prefix), "journal-%" PRIu32 "-",
                    writer_id);
    list = NULL;
    n = 0;
    cap = 0;

    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0) {
            continue;
        }

        errno = 0;
        first = strtoull(de->d_name + plen, &end, 10);
        if (errno != 0 || first == 0) {
            continue;
        }

        caud_seg_name(name, sizeof(name), writer_id, first);
        if (strcmp(name, de->d_name) != 0) {
            continue;
        }

        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            p = realloc(list, cap * sizeof(uint64_t));
            if (p == NULL) {
                goto fail;
            }
            list = p;
        }

        list[n++] = first;
    }

    closedir(d);

    if (n > 1) {
        qsort(list, n, sizeof(uint64_t), caud_cmp_u64);
    }

    *out = list;
    *nout = n;

    return 0;

fail:

    closedir(d);
    free(list);
    errno = ENOMEM;
    return -1;
}


/*
 * Frame check without the chain: 1 and *need = frame length for a whole
 * frame with good CRCs, 0 and *need = bytes wanted when avail is short,
 * -1 and *why for damage.
 */
static int
caud_frame_check(const uint8_t *p, size_t avail, size_t *need,
    const char **why)
{
    size_t    flen;
    uint32_t  len;

    if (avail < CAUD_FRAME_MIN_HDR) {
        *need = CAUD_FRAME_HDR_LEN;
        return 0;
    }

    if (memcmp(p, CAUD_FRAME_MAGIC, 4) != 0) {
        *why = "bad frame magic";
        return -1;
    }

    if (caud_crc32c(p, 20) != caud_get32(p + 20)) {
        *why = "frame header CRC mismatch";
        return -1;
    }

    len = caud_get32(p + 4);
    if (len > CAUD_MAX_RECORD) {
        *why = "frame length out of range";
        return -1;
    }

    if (p[16] != CAUD_TYPE_RECORD || p[17] != 0 || p[18] != 0 || p[19] != 0)
    {
        *why = "unknown frame type";
        return -1;
    }

    flen = CAUD_FRAME_OVERHEAD + (size_t) len;
    *need = flen;

    if (avail < flen) {
        return 0;
    }

    if (caud_crc32c(p, flen - 4) != caud_get32(p + flen - 4)) {
        *why = "frame CRC mismatch";
        return -1;
    }

    return 1;
}


/* ------------------------------------------------------------------ */
/* reader */

static int caud_reader_fail(caud_reader_t *r, uint64_t off, uint64_t seq,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));


static int
caud_reader_fail(caud_reader_t *r, uint64_t off, uint64_t seq,
    const char *fmt, ...)
{
    char     what[192];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);

    if (seq) {
        caud_strf(r->err, sizeof(r->err), "%s offset %" PRIu64 " seq %"
                 PRIu64 ": %s", r->name, off, seq, what);

    } else {
        caud_strf(r->err, sizeof(r->err), "%s offset %" PRIu64 ": %s",
                 r->name, off, what);
    }

    r->failed = 1;
    return -1;
}


/*
 * Makes at least n bytes from r->pos available in buf if the file has
 * them; returns how many are available, or -1.
 */
static ssize_t
caud_reader_fill(caud_reader_t *r, size_t n)
{
    size_t    avail, cap;
    ssize_t   got;
    uint8_t  *b;

    if (r->pos < r->bstart || r->pos > r->bstart + r->blen) {
        r->bstart = r->pos;
        r->blen = 0;
    }

    avail = r->bstart + r->blen - r->pos;
    if (avail >= n) {
        return avail;
    }

    memmove(r->buf, r->buf + (r->pos - r->bstart), avail);
    r->bstart = r->pos;
    r->blen = avail;

    if (n > r->cap) {
        cap = r->cap;
        while (cap < n) {
            cap *= 2;
        }

        b = realloc(r->buf, cap);
        if (b == NULL) {
            return -1;
        }

        r->buf = b;
        r->cap = cap;
    }

    while (r->blen < n) {
        got = pread(r->fd, r->buf + r->blen, r->cap - r->blen,
                    (off_t) (r->bstart + r->blen));
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }

        if (got == 0) {
            break;
        }

        r->blen += got;
    }

    return r->blen;
}


/* 1 if every byte from off to the end of the file is zero */
static int
caud_zero_tail(int fd, uint64_t off)
{
    size_t   i;
    ssize_t  n;
    uint8_t  b[4096];

    for ( ;; ) {
        n = pread(fd, b, sizeof(b), (off_t) off);
        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            return n == 0;
        }

        for (i = 0; i < (size_t) n; i++) {
            if (b[i]) {
                return 0;
            }
        }

        off += n;
    }
}


static int
caud_reader_seg_open(caud_reader_t *r, uint64_t first)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }

    if (caud_seg_path(r->path, sizeof(r->path), r->dir, r->writer_id, first)
        != 0)
    {
        errno = ENAMETOOLONG;
        return -1;
    }

    r->name = strrchr(r->path, '/') + 1;
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        return -1;
    }

    r->seg_first = first;
    r->have_header = 0;
    r->pos = 0;
    r->bstart = 0;
    r->blen = 0;

    return 0;
}


/*
 * The first seq of the segment after the current one: 0 if there is
 * none, -1 on error.  A successor means the current segment is sealed.
 */
static int
caud_reader_successor(caud_reader_t *r, uint64_t *next)
{
    size_t     i, n;
    uint64_t  *list;

    if (caud_seg_list(r->dir, r->writer_id, &list, &n) != 0) {
        caud_strf(r->err, sizeof(r->err), "%s: %s", r->dir, strerror(errno));
        r->failed = 1;
        return -1;
    }

    *next = 0;

    for (i = 0; i < n; i++) {
        if (list[i] > r->seg_first) {
            *next = list[i];
            break;
        }
    }

    free(list);

    return 0;
}


static int
caud_reader_header(caud_reader_t *r)
{
    ssize_t         avail;
    const uint8_t  *h;

    avail = caud_reader_fill(r, CAUD_SEGMENT_HDR_LEN);
    if (avail < 0) {
        return caud_reader_fail(r, 0, 0, "read: %s", strerror(errno));
    }

    if (avail < CAUD_SEGMENT_HDR_LEN) {
        return 0;
    }

    h = r->buf;

    if (memcmp(h, CAUD_SEG_MAGIC, 8) != 0
        || caud_crc32c(h, 60) != caud_get32(h + 60))
    {
        if (caud_zero_tail(r->fd, 0) == 1) {
            return 0;
        }

        return caud_reader_fail(r, 0, 0, "%s", "segment header damaged");
    }

    if (caud_get32(h + 8) != CAUD_VERSION || caud_get32(h + 56) != 0) {
        return caud_reader_fail(r, 0, 0, "%s", "unknown segment version");
    }

    if (caud_get32(h + 12) != r->writer_id
        || caud_get64(h + 16) != r->seg_first)
    {
        return caud_reader_fail(r, 0, 0, "%s",
                                "segment header names another writer or "
                                "seq (file renamed?)");
    }

    if (r->seg_first == 1 && memcmp(h + 24, caud_zero_hash, CAUD_HASH_LEN))
    {
        return caud_reader_fail(r, 0, 1, "%s",
                                "genesis prev_hash is not zero");
    }

    if (r->have_head) {
        if (memcmp(h + 24, r->head, CAUD_HASH_LEN) != 0) {
            return caud_reader_fail(r, 0, r->seg_first, "%s",
                                    "segment prev_hash does not match the "
                                    "previous segment's last entry_hash");
        }

    } else {
        /* where reading starts, the header is the trust anchor */
        memcpy(r->head, h + 24, CAUD_HASH_LEN);
        r->have_head = 1;
    }

    r->next_seq = r->seg_first;
    r->have_header = 1;
    r->pos = CAUD_SEGMENT_HDR_LEN;

    return 1;
}


/*
 * Checks the chain of the whole frame at buf and advances past it.  A
 * frame before from_seq is only passed over on the way to it: its CRCs
 * (caud_frame_check()), seq and prev_hash link are checked, but its
 * SHA-256 is not recomputed and its stored entry_hash becomes the head.
 * Positioning a reader was a SHA-256 of every record from the start of
 * the segment (up to 64 MiB) each time one was opened: the shipper's
 * backlog probe did that every 2 s.  The trust anchor of a reader that
 * starts later is then the first returned frame's prev_hash, as it is
 * the segment header's when it starts at a segment's first record; the
 * shipper checks that against MariaDB's head_hash, verify starts at 1.
 */
static int
caud_reader_chain(caud_reader_t *r, const uint8_t *p, size_t flen,
    caud_frame_t *f)
{
    uint8_t   h[CAUD_HASH_LEN];
    uint32_t  len;
    uint64_t  seq;

    seq = caud_get64(p + 8);
    len = caud_get32(p + 4);

    if (seq != r->next_seq) {
        return caud_reader_fail(r, r->pos, seq,
                                "expected seq %" PRIu64 " (record deleted, "
                                "inserted or reordered)", r->next_seq);
    }

    if (memcmp(p + 24, r->head, CAUD_HASH_LEN) != 0) {
        return caud_reader_fail(r, r->pos, seq, "%s",
                                "prev_hash does not match the previous "
                                "entry_hash (record deleted, inserted or "
                                "reordered)");
    }

    if (seq < r->from_seq) {
        memcpy(h, p + 56, CAUD_HASH_LEN);

    } else if (caud_hasher_entry(r->hasher, p + CAUD_FRAME_HDR_LEN, len,
                                 r->head, h)
               != 0)
    {
        return caud_reader_fail(r, r->pos, seq, "%s", "SHA-256 failed");

    } else if (memcmp(p + 56, h, CAUD_HASH_LEN) != 0) {
        return caud_reader_fail(r, r->pos, seq, "%s",
                                "entry_hash does not match the record");
    }

    f->seq = seq;
    f->prev_hash = p + 24;
    f->entry_hash = p + 56;
    f->payload = p + CAUD_FRAME_HDR_LEN;
    f->len = len;
    f->file = r->name;
    f->offset = r->pos;

    memcpy(r->head, h, CAUD_HASH_LEN);
    r->next_seq = seq + 1;
    r->pos += flen;

    return 1;
}


/*
 * At the end of the readable data of the current segment: moves to the
 * successor (1), reports the end (0), asks to look again (2), or finds
 * corruption (-1).
 */
static int
caud_reader_end(caud_reader_t *r)
{
    size_t       incomplete;
    uint64_t     next;
    struct stat  st;

    if (fstat(r->fd, &st) != 0) {
        return caud_reader_fail(r, r->pos, 0, "stat: %s", strerror(errno));
    }

    incomplete = (uint64_t) st.st_size > r->pos ? st.st_size - r->pos : 0;

    if (caud_reader_successor(r, &next) != 0) {
        return -1;
    }

    if (next == 0) {
        /* the live tail: a torn write, or a write in progress; forget
         * the buffered bytes, a reopened writer may rewrite them */
        r->torn = incomplete;
        r->bstart = r->pos;
        r->blen = 0;
        return 0;
    }

    if (incomplete || !r->have_header) {
        /* look again: the writer completes a frame before it creates
         * the next segment, so a short sealed segment is damage */
        r->blen = 0;
        return 2;
    }

    if (next != r->next_seq) {
        return caud_reader_fail(r, r->pos, r->next_seq,
                                "%s", "segments missing after this one "
                                "(records deleted)");
    }

    if (caud_reader_seg_open(r, next) != 0) {
        return caud_reader_fail(r, 0, 0, "open next segment: %s",
                                strerror(errno));
    }

    return 1;
}


int
caud_reader_next(caud_reader_t *r, caud_frame_t *f)
{
    int             rc, again, fresh;
    size_t          need;
    ssize_t         avail;
    const char     *why;
    const uint8_t  *p;

    if (r->failed) {
        return -1;
    }

    r->torn = 0;
    again = 0;
    fresh = 0;

    for ( ;; ) {
        if (!r->have_header) {
            rc = caud_reader_header(r);
            if (rc < 0) {
                return -1;
            }

            if (rc == 0) {
                goto end;
            }
        }

        avail = caud_reader_fill(r, CAUD_FRAME_HDR_LEN);
        if (avail < 0) {
            return caud_reader_fail(r, r->pos, 0, "read: %s",
                                    strerror(errno));
        }

        p = r->buf + (r->pos - r->bstart);
        rc = caud_frame_check(p, avail, &need, &why);

        if (rc == 0 && need > (size_t) avail) {
            avail = caud_reader_fill(r, need);
            if (avail < 0) {
                return caud_reader_fail(r, r->pos, 0, "read: %s",
                                        strerror(errno));
            }

            p = r->buf + (r->pos - r->bstart);
            rc = caud_frame_check(p, avail, &need, &why);
        }

        if (rc < 0 && !fresh) {
            /* the buffer may hold what was there before the writer's
             * last write (its preallocated zeros, a write in progress):
             * the file itself is read again before it is judged */
            r->bstart = r->pos;
            r->blen = 0;
            fresh = 1;
            continue;
        }

        if (rc < 0) {
            /* a tail of zeros is a crash after the size grew but before
             * the data reached the disk, or the writer's prealloc: torn,
             * not damage */
            if (caud_zero_tail(r->fd, r->pos) != 1) {
                return caud_reader_fail(r, r->pos, r->next_seq, "%s", why);
            }

            rc = 0;
        }

        if (rc == 1) {
            if (caud_reader_chain(r, p, need, f) != 1) {
                return -1;
            }

            if (f->seq < r->from_seq) {
                again = 0;
                fresh = 0;
                continue;
            }

            return 1;
        }

    end:

        rc = caud_reader_end(r);

        if (rc == 2) {
            if (again++) {
                return caud_reader_fail(r, r->pos, r->next_seq, "%s",
                                        r->have_header
                                        ? "sealed segment ends inside a "
                                          "frame (truncated)"
                                        : "sealed segment has no header");
            }
            continue;
        }

        if (rc != 1) {
            return rc;
        }

        again = 0;
        fresh = 0;
    }
}


/*
 * A reader from segment seg_first on that returns frames from from_seq;
 * caud_reader_open() finds the segment, the writer's resume names it.
 */
int
caud_reader_init(caud_reader_t **rp, const char *dir, uint32_t writer_id,
    uint64_t seg_first, uint64_t from_seq)
{
    caud_reader_t  *r;

    r = calloc(1, sizeof(caud_reader_t));
    if (r == NULL) {
        return -1;
    }

    r->fd = -1;
    r->writer_id = writer_id;
    r->from_seq = from_seq;
    r->cap = CAUD_READ_BUF;
    r->name = r->path;

    r->dir = strdup(dir);
    r->buf = malloc(r->cap);
    r->hasher = caud_hasher_new();

    if (r->dir == NULL || r->buf == NULL || r->hasher == NULL) {
        goto fail;
    }

    if (caud_reader_seg_open(r, seg_first) != 0) {
        goto fail;
    }

    *rp = r;

    return 0;

fail:

    caud_reader_close(r);
    return -1;
}


int
caud_reader_open(const char *dir, uint32_t writer_id, uint64_t from_seq,
    caud_reader_t **rp, char *err, size_t errlen)
{
    size_t     i, n;
    uint64_t  *list, first;

    *rp = NULL;

    if (from_seq == 0) {
        from_seq = 1;
    }

    if (caud_seg_list(dir, writer_id, &list, &n) != 0) {
        caud_strf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }

    if (n == 0 || list[0] > from_seq) {
        caud_strf(err, errlen, "%s: writer %" PRIu32 " has no segment with "
                 "seq %" PRIu64 "%s", dir, writer_id, from_seq,
                 n ? " (pruned)" : "");
        free(list);
        errno = ENOENT;
        return -1;
    }

    first = list[0];
    for (i = 0; i < n && list[i] <= from_seq; i++) {
        first = list[i];
    }

    free(list);

    if (caud_reader_init(rp, dir, writer_id, first, from_seq) != 0) {
        caud_strf(err, errlen, "%s: journal %" PRIu32 ": %s", dir, writer_id,
                 strerror(errno));
        return -1;
    }

    return 0;
}


const char *
caud_reader_error(caud_reader_t *r)
{
    return r->err;
}


size_t
caud_reader_torn(caud_reader_t *r)
{
    return r->torn;
}


void
caud_reader_close(caud_reader_t *r)
{
    if (r == NULL) {
        return;
    }

    if (r->fd >= 0) {
        close(r->fd);
    }

    caud_hasher_free(r->hasher);
    free(r->buf);
    free(r->dir);
    free(r);
}
