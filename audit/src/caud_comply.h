
/*
 * Conclave compliance engine (docs/compliance.md, COMPLIANCE.md 1.1,
 * 2, 7.3-7.4): exports, offline verification of an export, retention
 * and legal holds, and the admin journal that records every change.
 * Plain C over the audit library (caud.h), no nginx types: conclavectl
 * calls it from its main thread, the console will call it from a pool
 * thread.  Every call here blocks on MariaDB or the disk.  Functions
 * return 0 on success and -1 on failure (err) unless said otherwise.
 */


#ifndef _CAUD_COMPLY_H_INCLUDED_
#define _CAUD_COMPLY_H_INCLUDED_


#include "caud.h"


/* ------------------------------------------------------------------ */
/* the admin journal (caud_admin.c) */

/*
 * Actions of people, not of chat sessions (exports, retention and hold
 * changes, retention runs; the console's sign-ins and searches later)
 * are audit records like any other: appended to their own journal,
 * writer id CAUD_ADMIN_WRITER in conclave_audit_dir, made durable,
 * covered by a signed checkpoint at once and shipped into MariaDB, so
 * they are in the same tamper-evident chain before the call returns.
 * Workers use writer ids below 64 * 1024 (slot + 64 * generation).
 */
#define CAUD_ADMIN_WRITER  1000000u

typedef struct {
    const char            *dir;            /* conclave_audit_dir */
    const char            *node;
    const char            *origin_prefix;  /* key name, origin prefix */
    const char            *key;            /* conclave_audit_key */
    const caud_db_opts_t  *db;             /* NULL: leave it to the
                                              workers' shippers */
} caud_admin_t;

/* appends rec (its reference is kept by the caller), syncs, signs a
 * checkpoint, ships; waits up to 10 s for another admin writer */
int caud_admin_record(const caud_admin_t *adm, json_t *rec, uint64_t *seq,
    char *err, size_t errlen);


/* ------------------------------------------------------------------ */
/* exports (caud_export.c, caud_export_fmt.c) */

typedef enum {
    CAUD_FMT_ACTIANCE = 0,
    CAUD_FMT_CSV,
    CAUD_FMT_EML,
    CAUD_FMT_JSONL
} caud_format_e;

typedef enum {
    CAUD_TIME_MS = 0,       /* Actiance/CSV times: Unix milliseconds */
    CAUD_TIME_S,
    CAUD_TIME_US
} caud_time_unit_e;

typedef void (*caud_progress_pt)(void *data, const char *phase,
    uint64_t done, uint64_t total);

typedef struct {
    caud_format_e      format;
    const char        *output_dir;
    const char        *node;
    const char        *origin_prefix;
    const char        *key;            /* signs the manifest */
    int64_t            since_us;       /* ts_utc_us >= since; 0: open */
    int64_t            until_us;       /* ts_utc_us < until; 0: open */
    const char        *user;           /* bare JID: sender or peer */
    const char        *room;           /* room bare JID */
    const char        *cursor;         /* NULL: ad hoc, no cursor */
    size_t             batch;          /* records per batch; 0: 10000 */
    caud_time_unit_e   time_unit;
    int                level;          /* deflate level; 0: 1, -1: stored */
    caud_progress_pt   progress;
    void              *progress_data;
} caud_export_opts_t;

typedef struct {
    char      path[4096];               /* the zip */
    uint64_t  records;                  /* in records.jsonl */
    uint64_t  messages;
    uint64_t  conversations;            /* conversation batches */
    uint64_t  files;                    /* in the zip */
    uint64_t  journals;
} caud_export_result_t;

int caud_format_parse(const char *s, caud_format_e *f);
const char *caud_format_name(caud_format_e f);

/*
 * One zip in o->output_dir: the format's files, records.jsonl (every
 * exported record's canonical bytes with its hashes), per journal the
 * entry hashes 1..N and the signed checkpoint at N, manifest.txt (file
 * names, sizes, SHA-256) and manifest.sig (the manifest's hash signed
 * with the audit key).  With a cursor, continues after it and moves it
 * after the zip is in place.  Returns 0 (res->records may be 0), -1.
 */
int caud_export(const caud_db_opts_t *db, const caud_export_opts_t *o,
    caud_export_result_t *res, char *err, size_t errlen);

/*
 * Offline check of an export zip: manifest signature, every file's
 * size and SHA-256, no file outside the manifest, every checkpoint's
 * signature and that it covers the journal's entry hashes, every
 * record's hash and its place in the chain.  One line per finding on
 * out.  0 all good, 1 findings, -1 could not run.
 */
int caud_export_verify(const char *zip, const char *vkey, FILE *out,
    char *err, size_t errlen);


/* ------------------------------------------------------------------ */
/* retention and legal holds (caud_retention.c) */

#define CAUD_DAYS_FOREVER  (-1)

typedef struct {
    const char  *scope;           /* "global", "room", "user" */
    const char  *target;          /* "" for global */
    int          messages_days;   /* CAUD_DAYS_FOREVER: keep */
    int          signins_days;
} caud_policy_t;

typedef struct {
    const char  *matter;          /* unique name of the matter */
    const char  *description;
    const char  *custodians;      /* comma-separated bare JIDs */
    const char  *rooms;           /* comma-separated room JIDs */
    int64_t      since_us;        /* 0: open */
    int64_t      until_us;        /* 0: open */
} caud_hold_t;

typedef struct {
    uint64_t  examined;
    uint64_t  deleted;
    uint64_t  held;               /* expired but held */
    uint64_t  batches;
} caud_retention_stats_t;

/* profile: "none", "sec", "mifid", "cn"; prints the floors */
int caud_profile_set(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const char *profile, char *err, size_t errlen);
int caud_policy_set(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const caud_policy_t *p, char *err, size_t errlen);
int caud_policy_remove(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const char *scope, const char *target, char *err,
    size_t errlen);
/* policies, profile and holds as a JSON object (new reference) */
json_t *caud_retention_show(const caud_db_opts_t *db, char *err,
    size_t errlen);

int caud_hold_create(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const caud_hold_t *h, char *err, size_t errlen);
int caud_hold_release(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const char *matter, char *err, size_t errlen);

/*
 * Deletes what retention lets go and no active hold covers, in batches
 * of `batch` rows (0: 1000), each one transaction that also writes the
 * rows' signed tombstones; now_us 0 is the clock.  Records the run.
 */
int caud_retention_run(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, int64_t now_us, size_t batch,
    caud_retention_stats_t *st, char *err, size_t errlen);


#endif /* _CAUD_COMPLY_H_INCLUDED_ */
