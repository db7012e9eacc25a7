
/*
 * The journal directory as a whole: which journals it holds, whether a
 * live writer has one, and the checkpoint notes kept beside them.  The
 * shipper uses this to adopt journals whose worker is gone, and verify
 * to find everything there is to check.
 */


#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "caud.h"


#define CAUD_DIR_NAME_MAX  96


static void
caud_dir_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


static int
caud_cmp_u32(const void *a, const void *b)
{
    uint32_t  x = *(const uint32_t *) a, y = *(const uint32_t *) b;

    return x < y ? -1 : x > y;
}


static int
caud_cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


/*
 * "journal-<id>-<20 digits>.cj": only names the journal itself would
 * write count, so a stray file cannot pose as a journal.
 */
static int
caud_parse_segment(const char *name, uint32_t *id)
{
    char                buf[CAUD_DIR_NAME_MAX];
    char               *end;
    unsigned long long  w, first;

    if (strncmp(name, "journal-", 8) != 0) {
        return -1;
    }

    errno = 0;
    w = strtoull(name + 8, &end, 10);
    if (errno || end == name + 8 || *end != '-' || w > UINT32_MAX) {
        return -1;
    }

    first = strtoull(end + 1, &end, 10);
    if (errno || first == 0 || strcmp(end, ".cj") != 0) {
        return -1;
    }

    snprintf(buf, sizeof(buf), "journal-%" PRIu32 "-%020" PRIu64 ".cj",
             (uint32_t) w, (uint64_t) first);

    if (strcmp(buf, name) != 0) {
        return -1;
    }

    *id = (uint32_t) w;

    return 0;
}


int
caud_journal_list(const char *dir, uint32_t *ids, size_t max, size_t *n)
{
    DIR            *d;
    size_t          i, k;
    uint32_t        id;
    struct dirent  *de;

    *n = 0;

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    k = 0;

    while ((de = readdir(d)) != NULL) {
        if (caud_parse_segment(de->d_name, &id) != 0) {
            continue;
        }

        for (i = 0; i < k; i++) {
            if (ids[i] == id) {
                break;
            }
        }

        if (i < k) {
            continue;
        }

        if (k == max) {
            closedir(d);
            errno = ENOBUFS;
            return -1;
        }

        ids[k++] = id;
    }

    closedir(d);

    qsort(ids, k, sizeof(uint32_t), caud_cmp_u32);
    *n = k;

    return 0;
}


int
caud_journal_locked(const char *dir, uint32_t writer_id)
{
    int   fd, rc;
    char  path[4096];

    rc = snprintf(path, sizeof(path), "%s/journal-%" PRIu32 ".lock", dir,
                  writer_id);
    if (rc < 0 || (size_t) rc >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }

    /* a shared probe still conflicts with the writer's exclusive lock */
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        rc = (errno == EWOULDBLOCK) ? 1 : -1;
        close(fd);
        return rc;
    }

    (void) flock(fd, LOCK_UN);
    close(fd);

    return 0;
}


int
caud_checkpoint_path(char *buf, size_t size, const char *dir,
    uint32_t writer_id, uint64_t tree_size)
{
    int  n;

    n = snprintf(buf, size, "%s/checkpoint-%" PRIu32 "-%020" PRIu64 ".note",
                 dir, writer_id, tree_size);

    if (n < 0 || (size_t) n >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }

    return 0;
}


int
caud_checkpoint_list(const char *dir, uint32_t writer_id, uint64_t **sizes,
    size_t *n)
{
    DIR                *d;
    char                prefix[CAUD_DIR_NAME_MAX], buf[CAUD_DIR_NAME_MAX];
    char               *end;
    size_t              k, cap, plen;
    uint64_t           *list, *p;
    struct dirent      *de;
    unsigned long long  size;

    *sizes = NULL;
    *n = 0;

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    plen = snprintf(prefix, sizeof(prefix), "checkpoint-%" PRIu32 "-",
                    writer_id);
    list = NULL;
    k = 0;
    cap = 0;

    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0) {
            continue;
        }

        errno = 0;
        size = strtoull(de->d_name + plen, &end, 10);
        if (errno || size == 0 || strcmp(end, ".note") != 0) {
            continue;
        }

        snprintf(buf, sizeof(buf), "checkpoint-%" PRIu32 "-%020" PRIu64
                 ".note", writer_id, (uint64_t) size);
        if (strcmp(buf, de->d_name) != 0) {
            continue;
        }

        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            p = realloc(list, cap * sizeof(uint64_t));
            if (p == NULL) {
                free(list);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            list = p;
        }

        list[k++] = size;
    }

    closedir(d);

    if (k) {
        qsort(list, k, sizeof(uint64_t), caud_cmp_u64);
    }

    *sizes = list;
    *n = k;

    return 0;
}


/*
 * Durable and atomic: a reader sees the whole note or no file, and a
 * crash cannot leave a note whose records were lost (the caller only
 * stores a checkpoint over records that are already durable).
 */
int
caud_checkpoint_store(const char *dir, uint32_t writer_id,
    uint64_t tree_size, const char *note, size_t len, char *err,
    size_t errlen)
{
    int      fd, dfd, e;
    char     path[4096], tmp[4200];
    ssize_t  w;
    size_t   off;

    if (caud_checkpoint_path(path, sizeof(path), dir, writer_id, tree_size)
        != 0)
    {
        caud_dir_errf(err, errlen, "checkpoint path: %s", strerror(errno));
        return -1;
    }

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        caud_dir_errf(err, errlen, "create %s: %s", tmp, strerror(errno));
        return -1;
    }

    for (off = 0; off < len; off += (size_t) w) {
        w = write(fd, note + off, len - off);
        if (w < 0) {
            if (errno == EINTR) {
                w = 0;
                continue;
            }
            goto fail;
        }
    }

    if (fdatasync(fd) != 0) {
        goto fail;
    }

    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }

    fd = -1;

    if (rename(tmp, path) != 0) {
        goto fail;
    }

    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void) fsync(dfd);
        close(dfd);
    }

    return 0;

fail:

    e = errno;
    caud_dir_errf(err, errlen, "write %s: %s", tmp, strerror(e));
    if (fd >= 0) {
        close(fd);
    }
    (void) unlink(tmp);
    errno = e;

    return -1;
}
