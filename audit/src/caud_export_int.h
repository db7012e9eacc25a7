
/*
 * Shared by the export driver (caud_export.c) and the format writers
 * (caud_export_fmt.c); not part of the library's interface.
 */


#ifndef _CAUD_EXPORT_INT_H_INCLUDED_
#define _CAUD_EXPORT_INT_H_INCLUDED_


#include <stdio.h>

#include <glib.h>
#include <libxml/xmlwriter.h>
#include <zip.h>

#include "caud_comply.h"


/* what a record is in a conversation */
#define CAUD_X_MESSAGE   0
#define CAUD_X_JOIN      1
#define CAUD_X_LEAVE     2
#define CAUD_X_OTHER     3

/* an update of an earlier message (XEP-0308, XEP-0424) */
#define CAUD_X_EDIT      1
#define CAUD_X_RETRACT   2

/* the records of conversations: 1:1 messages and the MUC's records
 * of joins, leaves, room messages, subjects and private messages */
#define CAUD_X_EVENTS                                                       \
    "'message', 'muc_create', 'muc_join', 'muc_leave', 'muc_message', "     \
    "'muc_subject', 'muc_private'"

/* Global Relay's cap per message (COMPLIANCE.md 1.1) */
#define CAUD_EML_MAX     (250 * 1024 * 1024)


typedef struct {
    uint32_t   writer;
    uint64_t   seq;
    int64_t    ts;
    char      *event;
    char      *user;            /* actor_user, "" when NULL */
    char      *peer;            /* bare JID of object.id, "" when NULL */
    char      *body;            /* "" when NULL */
    size_t     body_len;
    char      *stanza_id;
    char      *ref;             /* the stanza id an update applies to */
    int        kind;
    int        update;
    int        room;
    char       id[112];         /* MessageId: "<node>/<writer>/<seq>" */
} caud_xrec_t;


typedef struct {
    char        *key;
    int          room;
    char        *name;          /* "a@x, b@x" or the room JID */
    char         id[27];        /* 26 hex digits, like Mattermost ids */
    char        *a;             /* 1:1: the two participants */
    char        *b;
    char        *domain;
    GPtrArray   *recs;          /* caud_xrec_t *, in export order */
    int64_t      start;
    int64_t      end;
    guint        present;       /* members before the batch */
} caud_xconv_t;


typedef struct {
    uint32_t   writer;
    uint64_t   cursor;          /* exported up to here before */
    uint64_t   upto;            /* the newest checkpoint's size */
    uint8_t    root[CAUD_HASH_LEN];
    char      *note;
    uint64_t   lo;              /* lowest seq exported now; 0: none */
    uint64_t   records;
} caud_xjournal_t;


/* caud_export_zip.c: members deflated while written */
typedef struct caud_xout_s  caud_xout_t;
typedef struct caud_xz_s    caud_xz_t;
/* caud_export_chain.c: the chain's leaves, read alongside */
typedef struct caud_xchain_s  caud_xchain_t;


typedef struct {
    const caud_export_opts_t  *o;
    caud_export_result_t      *res;
    const caud_db_opts_t      *db;
    struct st_mysql           *m;
    struct st_mysql           *m2;         /* room history, while m
                                              streams the window */
    caud_hasher_t             *hasher;
    char                      *stage;

    GHashTable                *convs;      /* key -> caud_xconv_t */
    GPtrArray                 *order;      /* the batch's conversations */
    GPtrArray                 *recs;       /* the batch's records */
    GHashTable                *rooms;      /* room -> (member -> 1) */
    GHashTable                *eml_n;      /* conversation id -> files */

    xmlTextWriterPtr           xml;
    FILE                      *xmlfp;      /* what xml writes into */
    FILE                      *csv;
    FILE                      *jsonl;
    json_t                    *meta;       /* metadata.json */
    caud_xz_t                 *z;          /* the deflating thread */
    char                      *jnode;      /* the node, JSON-quoted */
    caud_xchain_t             *chain;      /* the leaves' thread */
    int                        chain_joined;

    caud_xjournal_t           *js;
    size_t                     nj;

    char                      *err;
    size_t                     errlen;
} caud_export_t;


void caud_xerr(caud_export_t *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

int caud_xfmt_open(caud_export_t *x);
int caud_xfmt_batch(caud_export_t *x);
int caud_xfmt_close(caud_export_t *x);
/* room membership before `before` (muc_create/_join/_leave) */
int caud_xroom_load(caud_export_t *x, const char *room, int64_t before,
    GHashTable *members);
int64_t caud_xtime(const caud_export_t *x, int64_t us);

/* a member of the zip, deflated and digested while it is written;
 * fclose() it when done, before the manifest */
FILE *caud_xout_open(caud_export_t *x, const char *name);
caud_xout_t *caud_xout_find(caud_export_t *x, const char *name);
int caud_xout_digest(caud_xout_t *o, char hex[65], uint64_t *size);
zip_source_t *caud_xout_source(zip_t *za, caud_xout_t *o);
void caud_xz_free(caud_export_t *x);

/* chain/<writer>.leaves and .checkpoint of journal js[i] */
void caud_xchain_start(caud_export_t *x);
void caud_xchain_join(caud_export_t *x);
int caud_xleaves(caud_export_t *x, size_t i);
void caud_xchain_clean(caud_export_t *x);
void caud_xchain_free(caud_export_t *x);


#endif /* _CAUD_EXPORT_INT_H_INCLUDED_ */
