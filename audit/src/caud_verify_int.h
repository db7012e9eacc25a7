
/*
 * What the two passes of verify share (caud_verify.c: the report, the
 * checkpoint notes and the journal directory; caud_verify_db.c: the
 * MariaDB rows).  Not part of the library's interface.
 */


#ifndef CAUD_VERIFY_INT_H
#define CAUD_VERIFY_INT_H


#include <stdint.h>
#include <stdio.h>

#include "caud.h"


#define CAUD_V_MAX_LINES    1000      /* finding lines per journal */


typedef struct {
    uint64_t  size;
    uint8_t   root[CAUD_HASH_LEN];
    int       valid;                  /* signature, origin and size good */
} caud_vcp_t;


typedef struct {
    uint64_t  journals;
    uint64_t  records;
    uint64_t  checkpoints;
} caud_vcount_t;


typedef struct {
    const caud_verify_opts_t  *o;
    FILE                      *out;
    caud_verifier_t           *vkey;
    caud_hasher_t             *hasher;
    caud_buf_t                 colbuf;    /* caud_columns() values */
    const char                *node;

    uint32_t                   writer;
    uint64_t                   lines;     /* of the current journal */
    uint64_t                   findings;

    caud_vcount_t              files;
    caud_vcount_t              db;

    char                      *err;
    size_t                     errlen;
} caud_verify_t;


/* caud_verify.c */
void caud_verrf(caud_verify_t *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void caud_vfind(caud_verify_t *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void caud_vjournal_begin(caud_verify_t *v, uint32_t writer);
void caud_vjournal_end(caud_verify_t *v);
void caud_vfind_range(caud_verify_t *v, uint64_t from, uint64_t to,
    const char *what, const char *detail);
int caud_vnote(caud_verify_t *v, uint64_t size, const char *note, size_t len,
    const char *where, caud_vcp_t *cp);
void caud_vcp_root(caud_verify_t *v, const caud_vcp_t *cp,
    const uint8_t *entry, const char *store);
int caud_vfirst_seq(const char *dir, uint32_t writer, uint64_t *first);

/* caud_verify_db.c: the MariaDB pass */
int caud_vdb(caud_verify_t *v);


#endif /* CAUD_VERIFY_INT_H */
