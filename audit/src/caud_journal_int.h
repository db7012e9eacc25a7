
/*
 * Shared by the journal's writer (caud_journal.c) and its reader
 * (caud_journal_read.c); not part of the library's interface.  The
 * segment and frame layout is described at the top of caud_journal.c.
 * The reader's state is here because the writer resumes after a crash
 * by reading its own last segment (caud_journal_resume()).
 */


#ifndef _CAUD_JOURNAL_INT_H_INCLUDED_
#define _CAUD_JOURNAL_INT_H_INCLUDED_


#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "caud.h"


#define CAUD_SEG_MAGIC      "CAUDSEG1"
#define CAUD_FRAME_MAGIC    "CJR1"
#define CAUD_VERSION        1
#define CAUD_TYPE_RECORD    1


struct caud_reader_s {
    char                 *dir;
    uint32_t              writer_id;
    uint64_t              from_seq;

    int                   fd;
    uint64_t              seg_first;
    char                  path[PATH_MAX];
    char                 *name;         /* in path */
    int                   have_header;
    int                   have_head;    /* chain head known */

    uint64_t              pos;          /* next frame in the file */
    uint8_t              *buf;
    size_t                cap;
    uint64_t              bstart;       /* file offset of buf[0] */
    size_t                blen;

    uint64_t              next_seq;
    uint8_t               head[CAUD_HASH_LEN];
    size_t                torn;
    int                   failed;

    caud_hasher_t        *hasher;
    char                  err[384];
};


/* the chain anchor of seq 1 (caud_journal.c) */
extern const uint8_t  caud_zero_hash[CAUD_HASH_LEN];


/* caud_journal.c */
uint32_t caud_crc32c(const uint8_t *p, size_t n);
void caud_strf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* caud_journal_read.c */
int caud_seg_path(char *buf, size_t size, const char *dir, uint32_t writer_id,
    uint64_t first);
int caud_seg_list(const char *dir, uint32_t writer_id, uint64_t **out,
    size_t *nout);
int caud_reader_init(caud_reader_t **rp, const char *dir, uint32_t writer_id,
    uint64_t seg_first, uint64_t from_seq);


#endif /* _CAUD_JOURNAL_INT_H_INCLUDED_ */
