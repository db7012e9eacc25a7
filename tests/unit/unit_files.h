
/*
 * Files for the tests of the audit journal and what reads it, and for
 * its benchmarks (tests/bench/journal_bench.c, verify_bench.c): a
 * directory under $TMPDIR that is removed with all it holds, a whole
 * file read into memory, a segment's path (the name
 * caud_journal_read.c gives it, written out again here so that a
 * change to the name shows), and a directory's files dropped from the
 * page cache.  The includer defines _GNU_SOURCE (nftw) and includes
 * this once.
 */


#ifndef _UNIT_FILES_H_INCLUDED_
#define _UNIT_FILES_H_INCLUDED_


#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>


static inline int
unit_rm_one(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;

    return remove(path);
}


static inline void
rmtree(const char *dir)
{
    nftw(dir, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}


/* a new directory $TMPDIR/<name>-XXXXXX (or under /tmp) in buf */
static inline char *
mkdir_tmp(char *buf, size_t size, const char *name)
{
    const char  *base;

    base = getenv("TMPDIR");
    snprintf(buf, size, "%s/%s-XXXXXX", base ? base : "/tmp", name);

    return mkdtemp(buf);
}


/* path's bytes in a malloc()ed buffer with room for a NUL, or NULL */
static inline uint8_t *
slurp(const char *path, size_t *len)
{
    int          fd;
    uint8_t     *b;
    ssize_t      n;
    struct stat  st;

    fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }

    b = malloc(st.st_size + 1);
    n = b ? pread(fd, b, st.st_size, 0) : -1;
    close(fd);

    if (n != st.st_size) {
        free(b);
        return NULL;
    }

    *len = n;
    return b;
}


static inline char *
seg_path(char *buf, size_t size, const char *dir, unsigned writer,
    unsigned long long first)
{
    snprintf(buf, size, "%s/journal-%u-%020llu.cj", dir, writer, first);
    return buf;
}


/*
 * A directory's files synced and dropped from the page cache
 * (POSIX_FADV_DONTNEED), so that a benchmark reads them from the disk:
 * our own files only, never the whole cache.
 */
static inline void
drop_cache(const char *dir)
{
    int             fd;
    DIR            *d;
    char            path[4096];
    struct dirent  *de;

    d = opendir(dir);
    if (d == NULL) {
        return;
    }

    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        fd = open(path, O_RDONLY);
        if (fd >= 0) {
            (void) fdatasync(fd);
            (void) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }

    closedir(d);
}


#endif /* _UNIT_FILES_H_INCLUDED_ */
