
/*
 * Conclave audit library (caud): audit records, the per-writer journal
 * and Ed25519-signed checkpoints.  Plain C, no nginx types; functions
 * return 0 on success and -1 on failure unless said otherwise.
 *
 * The path of a record (DESIGN.md "The audit record is the product's
 * spine", COMPLIANCE.md 7.1-7.2):
 *
 *   caud_record_new() ... caud_record_set_*()      build a jansson object
 *   caud_journal_append()                          owner thread, no fsync
 *   caud_journal_sync()                            a pool thread
 *   caud_journal_durable_seq() >= seq              now it may be routed
 *   caud_reader_next()                             shipper, verify
 *   caud_checkpoint_sign() / _verify()             signed tree heads
 */


#ifndef _CAUD_H_INCLUDED_
#define _CAUD_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>


#define CAUD_HASH_LEN          32
#define CAUD_MAX_RECORD        (1024 * 1024)     /* canonical bytes */
#define CAUD_SEGMENT_SIZE      (64 * 1024 * 1024)
#define CAUD_RETIRED_MAX       16

/* segment header, frame header + hashes, trailing CRC (see the layout
 * comment in caud_journal.c) */
#define CAUD_SEGMENT_HDR_LEN   64
#define CAUD_FRAME_HDR_LEN     88
#define CAUD_FRAME_OVERHEAD    (CAUD_FRAME_HDR_LEN + 4)


/* ------------------------------------------------------------------ */
/* records (caud_record.c) */

/*
 * A record is a jansson object, COMPLIANCE.md 7.1:
 *
 *   {"v":1, "event":"message", "status":"success", "ts_utc_us":...,
 *    "seq":N,                       set by caud_journal_append()
 *    "actor":{"user","ldap_dn","session_id","ip","transport","client"},
 *    "object":{"type","id"}, "params":{...},
 *    "prior_state", "resulting_state", "meta", "error":{"code",...}}
 *
 * Only "v", "event", "status" and "ts_utc_us" are required; everything
 * else is added by the event that needs it, so later issues (rooms,
 * admin actions, uploads) add events and params, not a new format.
 *
 * The canonical encoding, which is what gets hashed, stored in the
 * journal and shipped, is jansson's JSON_COMPACT | JSON_SORT_KEYS
 * without JSON_ENSURE_ASCII: UTF-8 as is, keys sorted bytewise, no
 * whitespace, "\uXXXX" only for control characters.  Real numbers are
 * refused because their text form is not byte-stable across libraries;
 * times are integer microseconds.  The bytes are stored, so nobody ever
 * needs to re-encode a record to check its hash.
 */

typedef enum {
    CAUD_ATTEMPT = 0,
    CAUD_SUCCESS,
    CAUD_FAIL
} caud_status_e;


typedef struct {
    const char  *user;          /* bare JID or login; NULL = omitted */
    const char  *ldap_dn;
    const char  *session_id;
    const char  *ip;
    const char  *transport;     /* "websocket", "bosh", "tcp", "admin" */
    const char  *client;        /* user agent / XMPP resource */
} caud_actor_t;


typedef struct {
    uint8_t  *data;
    size_t    len;
    size_t    cap;
} caud_buf_t;


typedef struct caud_hasher_s  caud_hasher_t;


int64_t caud_now_us(void);

json_t *caud_record_new(const char *event, caud_status_e status,
    int64_t ts_utc_us);
int caud_record_set_actor(json_t *rec, const caud_actor_t *actor);
int caud_record_set_object(json_t *rec, const char *type, const char *id);
int caud_record_set_error(json_t *rec, const char *code,
    const char *description);
/* value is stolen, even on failure */
int caud_record_set_param(json_t *rec, const char *key, json_t *value);
/* len bytes of UTF-8 (a body or a whole stanza may hold NULs) */
int caud_record_set_param_str(json_t *rec, const char *key, const char *s,
    size_t len);

/* appends the canonical bytes of rec to b (b->len grows) */
int caud_record_encode(const json_t *rec, caud_buf_t *b);

/*
 * A flat record: the shape of the records written per stanza and per
 * session (every member a string, or the fixed integers), encoded
 * straight to the canonical bytes without a jansson object: no malloc
 * per record.  The bytes are those caud_record_encode() gives for the
 * same record built with caud_record_new() and the setters (the unit
 * test compares them), and a string that is not valid UTF-8 is refused
 * as json_stringn() refuses it.  NULL members are omitted; actor is
 * always there (caud_record_set_actor() with all members NULL gives
 * "actor":{}); object when object_type is set, error when error_code or
 * error_description is; params when there is one.  Param keys must be
 * distinct (the setters would let the last one win).
 */
#define CAUD_FLAT_PARAMS       12

typedef struct {
    const char          *key;
    const char          *s;
    size_t               len;
} caud_flat_param_t;


typedef struct {
    const char          *event;
    caud_status_e        status;
    int64_t              ts_utc_us;
    caud_actor_t         actor;
    const char          *object_type;
    const char          *object_id;       /* object_id_len bytes */
    size_t               object_id_len;
    const char          *error_code;
    const char          *error_description;
    caud_flat_param_t    params[CAUD_FLAT_PARAMS];
    size_t               nparams;
} caud_flat_t;


/* appends the canonical bytes of r with "seq":seq to b */
int caud_flat_encode(const caud_flat_t *r, uint64_t seq, caud_buf_t *b);
json_t *caud_record_decode(const void *p, size_t len, char *err,
    size_t errlen);
void caud_buf_free(caud_buf_t *b);
/* room for n more bytes, doubling (caud_db.c); 0 or -1 */
int caud_buf_reserve(caud_buf_t *b, size_t n);

/*
 * entry_hash = SHA-256(0x00 || canonical || prev_hash): an RFC 6962 leaf
 * hash (2.1) of canonical || prev_hash, so the chain head can later be a
 * Merkle leaf without rehashing.  A hasher is not thread-safe: one per
 * thread.
 */
caud_hasher_t *caud_hasher_new(void);
int caud_hasher_entry(caud_hasher_t *h, const void *canon, size_t len,
    const uint8_t prev[CAUD_HASH_LEN], uint8_t out[CAUD_HASH_LEN]);
/* SHA-256(prefix || a || b), the RFC 6962 leaf (0x00) and node (0x01) */
int caud_hasher_prefixed(caud_hasher_t *h, uint8_t prefix, const void *a,
    size_t alen, const void *b, size_t blen, uint8_t out[CAUD_HASH_LEN]);
void caud_hasher_free(caud_hasher_t *h);


/* ------------------------------------------------------------------ */
/* journal (caud_journal.c; the reader is caud_journal_read.c) */

/*
 * One journal per writer (nginx worker): segment files
 * "journal-<writer_id>-<first_seq, 20 digits>.cj" in one directory,
 * and "journal-<writer_id>.lock", flock()ed while a writer has it open.
 * seq starts at 1 and is gapless per writer, so a checkpoint's tree
 * size N covers seqs 1..N.
 *
 * THREADING CONTRACT
 *
 *   Owner thread (the worker's event loop): caud_journal_open(),
 *   _append(), _append_flat(), _append_flat_batch(), _flush(),
 *   _append_raw(), _next_seq(), _last_seq(), _head(), _error(),
 *   _close().  Append never syncs and never waits for the
 *   sync thread: it is one pwrite(2) into the page cache (plus creating
 *   a file when it rotates), and it takes a mutex only while rotating,
 *   for a few instructions.  Only open and close wait for the disk.
 *
 *   Any thread, concurrently with the owner: caud_journal_sync(),
 *   _durable_seq(), _written_seq().  Concurrent sync calls are
 *   serialised by the journal.  Sync snapshots the highest seq whose
 *   write(2) has returned, fdatasync()s every segment that may hold
 *   records up to it (segments retired by rotation first, then the
 *   directory if a segment was created, then the current one) and only
 *   then publishes that seq as durable_seq (release; read it with
 *   acquire).  Appends that race with a sync are covered by the next
 *   one: that is the group commit.
 *
 *   _close() must not race with a sync: stop or join the sync thread
 *   (or wait for its posted task) first.
 *
 *   With opts.no_sync (fsync policy "off") nothing ever waits for
 *   durability: rotation closes the old segment at once, and sync may
 *   only be called from the owner thread.
 *
 *   The lock is an flock() on the open file description: open the
 *   journal in the worker, after fork(), never in the master.  Writer
 *   ids must be unique among live writers: during an nginx reload the
 *   old generation's workers still hold theirs, so an id taken from the
 *   worker slot alone makes the new worker's open fail (EWOULDBLOCK).
 *
 *   After an fdatasync() error the journal is failed for good (Linux may
 *   have dropped the dirty pages, so retrying could report success for
 *   lost data): append, sync and close return -1 with EIO.  A write
 *   error (ENOSPC, EDQUOT, EIO) is not sticky: the partial frame is cut
 *   off, append returns -1 with errno set, and the next append retries.
 */

typedef struct caud_journal_s  caud_journal_t;


/*
 * prealloc: the writer keeps up to this many bytes of zeros written
 * ahead of the live segment's last frame, so that a record write lands
 * in blocks the file already has, below its size: fdatasync() then
 * flushes data only, without the inode and allocation metadata an
 * append past the end makes it write too (ext4 measured: half the CPU
 * and about half the time of a sync round, docs/benchmarks.md).  The
 * zeros are a torn tail to every reader (the end); rotation and close
 * cut them off, so a sealed segment ends at its last frame as before.
 */
typedef struct {
    size_t    segment_size;     /* rotate before passing it; 0: default */
    int       no_sync;          /* fsync policy "off" */
    unsigned  mode;             /* segment file mode; 0: 0600 */
    size_t    prealloc;         /* bytes of zeros ahead; 0: none */
} caud_journal_opts_t;


/*
 * Opens (and locks) the journal, creating the first segment if there is
 * none.  Resumes an existing one: verifies the last segment (CRC and
 * chain), cuts a torn tail off (an incomplete last frame, or a tail of
 * zeros), fdatasync()s, and continues the chain from the last good
 * frame.  Corruption that is not a torn tail fails the open with the
 * file, offset and seq in err: the journal is evidence, so it is never
 * "repaired" by dropping records.  Blocks on the disk: call it at
 * worker start, not from the event loop.
 */
int caud_journal_open(const char *dir, uint32_t writer_id,
    const caud_journal_opts_t *opts, caud_journal_t **jp, char *err,
    size_t errlen);

/* sets rec["seq"] to the next seq, encodes and writes the frame */
int caud_journal_append(caud_journal_t *j, json_t *rec, uint64_t *seq);
/* the same for a flat record (caud_flat_encode()), without jansson */
int caud_journal_append_flat(caud_journal_t *j, const caud_flat_t *r,
    uint64_t *seq);

/*
 * The same, batched: the frame is built (seq, chain) but written with
 * the next caud_journal_flush() or immediate append, in one pwrite(2)
 * with the frames batched before it (at most 256 KiB are held; more is
 * written at once).  Until then written_seq does not cover it, so no
 * sync makes it durable: a caller that waits for durable_seq before
 * acting on the record keeps the durable-before-delivery rule.  If
 * that write fails, every batched frame is lost together: written_seq
 * stays below them, last_seq goes back to it, and their seqs are
 * reused; the caller learns it from the failed flush or append.
 */
int caud_journal_append_flat_batch(caud_journal_t *j, const caud_flat_t *r,
    uint64_t *seq);
int caud_journal_flush(caud_journal_t *j);

/* canonical bytes as they are; they should carry "seq":next_seq() */
int caud_journal_append_raw(caud_journal_t *j, const void *canon,
    size_t len, uint64_t *seq);

int caud_journal_sync(caud_journal_t *j, char *err, size_t errlen);

uint64_t caud_journal_next_seq(caud_journal_t *j);
uint64_t caud_journal_last_seq(caud_journal_t *j);
const uint8_t *caud_journal_head(caud_journal_t *j);  /* entry_hash */
uint64_t caud_journal_written_seq(caud_journal_t *j);
uint64_t caud_journal_durable_seq(caud_journal_t *j);
const char *caud_journal_error(caud_journal_t *j);

/* any thread: the live segment's first seq and the end of its written
 * frames (its file may be longer: prealloc) */
void caud_journal_live_end(caud_journal_t *j, uint64_t *seg_first,
    uint64_t *end);

/* syncs (unless no_sync), closes and unlocks; frees j even on error */
int caud_journal_close(caud_journal_t *j, char *err, size_t errlen);


/*
 * Reader: verifies as it goes, from the segment that holds from_seq:
 * the segment header, every frame's CRCs, seq continuity and the hash
 * chain, across segments.  A reader that starts at seq 1 checks the
 * whole chain from the genesis (prev_hash all zeros); one that starts
 * later trusts the prev_hash in the first segment's header, and a
 * checkpoint check (below) closes that gap.  The frames it passes over
 * before from_seq get their CRCs, seq and prev_hash link checked but
 * no SHA-256: the stored entry_hash of the last one is the anchor of
 * the first frame returned (whose SHA-256 is checked).
 *
 * caud_reader_next() returns 1 with a frame, 0 at the end, -1 on
 * corruption (caud_reader_error() names the file, offset and seq).
 * An incomplete last frame of the last segment is a torn tail or a
 * write in progress: it is the end (caud_reader_torn() says how many
 * bytes), and the next call looks again, so a shipper can tail a live
 * journal.  An incomplete frame in a segment that has a successor is
 * corruption.  The frame's pointers stay valid until the next call.
 * A reader needs no lock and may run in another process than the
 * writer.
 */

typedef struct caud_reader_s  caud_reader_t;


typedef struct {
    uint64_t        seq;
    const uint8_t  *prev_hash;
    const uint8_t  *entry_hash;
    const uint8_t  *payload;      /* canonical JSON, not NUL-terminated */
    size_t          len;
    const char     *file;         /* segment file name */
    uint64_t        offset;       /* of the frame in that file */
} caud_frame_t;


int caud_reader_open(const char *dir, uint32_t writer_id, uint64_t from_seq,
    caud_reader_t **rp, char *err, size_t errlen);
int caud_reader_next(caud_reader_t *r, caud_frame_t *f);
const char *caud_reader_error(caud_reader_t *r);
size_t caud_reader_torn(caud_reader_t *r);
void caud_reader_close(caud_reader_t *r);


/* ------------------------------------------------------------------ */
/* checkpoints (caud_checkpoint.c) */

/*
 * C2SP tlog-checkpoint in a C2SP signed note, Ed25519:
 *
 *   <origin>\n<tree size>\n<base64 root>\n
 *   \n
 *   \u2014 <key name> base64(key ID || signature)\n
 *
 * key ID = SHA-256(name || "\n" || 0x01 || public key)[:4], and a
 * verifier key is written "<name>+<hex key ID>+base64(0x01 || public
 * key)" (the signed-note "vkey" that other tools accept).
 *
 * For now the root is the journal's chain head: the entry_hash of
 * record <tree size>, which commits to every record before it.  An
 * RFC 6962 Merkle root over the same entry hashes (they are already
 * leaf hashes) will replace it when inclusion and consistency proofs
 * land; caud_merkle_* below computes it, checked against the RFC 6962
 * reference vectors.
 */

#define CAUD_ORIGIN_MAX  256
#define CAUD_NOTE_MAX    4096
#define CAUD_VKEY_MAX    512

typedef struct caud_signer_s    caud_signer_t;
typedef struct caud_verifier_s  caud_verifier_t;


typedef struct {
    char      origin[CAUD_ORIGIN_MAX];   /* <appliance-id>/audit/<node> */
    uint64_t  size;
    uint8_t   root[CAUD_HASH_LEN];
} caud_checkpoint_t;


/* a new Ed25519 key in a PKCS#8 PEM file created 0600 (never replaced) */
int caud_key_generate(const char *path, char *err, size_t errlen);

caud_signer_t *caud_signer_load(const char *path, const char *name,
    char *err, size_t errlen);
int caud_signer_vkey(const caud_signer_t *s, char *buf, size_t size);
void caud_signer_free(caud_signer_t *s);

caud_verifier_t *caud_verifier_new(const char *vkey, char *err,
    size_t errlen);
void caud_verifier_free(caud_verifier_t *v);

/*
 * Plain signed notes (golang.org/x/mod/sumdb/note): text must end with
 * "\n"; text and buf may be the same.  verify accepts the note when a
 * signature line is by v's name and key ID and valid, ignores lines by
 * other keys, and returns the text length.
 */
int caud_note_sign(caud_signer_t *s, const char *text, size_t tlen,
    char *buf, size_t size, size_t *len);
int caud_note_verify(const caud_verifier_t *v, const char *note, size_t len,
    size_t *text_len, char *err, size_t errlen);

/* the NUL-terminated note in buf; *len without the NUL */
int caud_checkpoint_sign(caud_signer_t *s, const caud_checkpoint_t *cp,
    char *buf, size_t size, size_t *len);

/*
 * Accepts the note only if it is well formed, signed by v's key, and,
 * when origin is not NULL, has that origin; fills cp.  Signatures by
 * other keys (witness cosignatures) are ignored.
 */
int caud_checkpoint_verify(const caud_verifier_t *v, const char *note,
    size_t len, const char *origin, caud_checkpoint_t *cp, char *err,
    size_t errlen);

/*
 * Parses a checkpoint note without checking its signatures: for storing
 * notes that verification checks later (the shipper), never for
 * trusting them.
 */
int caud_checkpoint_parse(const char *note, size_t len,
    caud_checkpoint_t *cp, char *err, size_t errlen);

/*
 * Reads the journal from seq 1 through record cp->size, verifying the
 * chain from the genesis, and compares the chain head with cp->root.
 * Catches a rewritten history and a journal cut below the checkpoint.
 */
int caud_checkpoint_check_journal(const char *dir, uint32_t writer_id,
    const caud_checkpoint_t *cp, char *err, size_t errlen);


/*
 * RFC 6962 2.1 Merkle tree head, kept as a compact range: one subtree
 * root per set bit of size, so an append costs O(1) amortised hashes.
 */
typedef struct {
    uint64_t  size;
    uint8_t   level[64][CAUD_HASH_LEN];
} caud_merkle_t;

void caud_merkle_init(caud_merkle_t *m);
int caud_merkle_append(caud_merkle_t *m, caud_hasher_t *h,
    const uint8_t leaf[CAUD_HASH_LEN]);
int caud_merkle_root(const caud_merkle_t *m, caud_hasher_t *h,
    uint8_t out[CAUD_HASH_LEN]);
int caud_merkle_leaf(caud_hasher_t *h, const void *data, size_t len,
    uint8_t out[CAUD_HASH_LEN]);


/* ------------------------------------------------------------------ */
/* the journal directory (caud_journal_dir.c) */

/*
 * Files beside the segments:
 *
 *   journal-<writer_id>.lock                 flock()ed by the live writer
 *   checkpoint-<writer_id>-<size, 20 digits>.note
 *                                            one C2SP signed note each,
 *                                            written (tmp + rename) only
 *                                            once records 1..size are
 *                                            durable
 *
 * A checkpoint's origin is "<origin prefix>/<writer_id>", the prefix
 * being "<conclave_domain>/audit/<node>"; the signing key's name is the
 * prefix itself.
 */

/* writer ids with at least one segment in dir, ascending; -1 on error */
int caud_journal_list(const char *dir, uint32_t *ids, size_t max,
    size_t *n);

/* 1: a live writer holds the journal's lock; 0: free (or no lock file);
 * -1: error.  A probe, racy by nature: adopting a journal means opening
 * it, and that takes the lock for real. */
int caud_journal_locked(const char *dir, uint32_t writer_id);

/* sizes of writer_id's checkpoint files, ascending (malloc()ed) */
int caud_checkpoint_list(const char *dir, uint32_t writer_id,
    uint64_t **sizes, size_t *n);
int caud_checkpoint_path(char *buf, size_t size, const char *dir,
    uint32_t writer_id, uint64_t tree_size);
/* writes the note as that file (tmp + fsync + rename + dir fsync) */
int caud_checkpoint_store(const char *dir, uint32_t writer_id,
    uint64_t tree_size, const char *note, size_t len, char *err,
    size_t errlen);


/* ------------------------------------------------------------------ */
/* MariaDB (caud_db.c, caud_ship.c) */

/*
 * Tables (audit/schema/NNN_*.sql, applied by caud_db_migrate()):
 *
 *   schema_version    (version, name, applied_at)
 *   audit_journal     (node, writer_id) -> shipped_seq, head_hash
 *   audit_record      (node, writer_id, seq) -> the canonical payload
 *                     bytes, prev_hash, entry_hash, and columns copied
 *                     out of the payload for the compliance queries
 *   audit_checkpoint  (node, writer_id, size) -> root, note
 *
 * Every blocking call here has the timeouts of caud_db_opts_t; none of
 * it may run on an nginx event loop (a worker runs it in its shipper
 * thread).
 */

typedef struct {
    const char  *host;        /* an IP address (no DNS), or NULL */
    unsigned     port;
    const char  *socket;      /* unix socket path, or NULL */
    const char  *user;
    const char  *password;
    const char  *database;
    unsigned     timeout_s;   /* connect, read and write; 0: 5 s */
} caud_db_opts_t;

struct st_mysql;

/*
 * A connection with db's connect, read and write timeouts, utf8mb4
 * (utf8mb4_unicode_ci), UTC session time and no automatic reconnect.
 * host must be an IP address: Connector/C resolves a name with a
 * blocking getaddrinfo() that no timeout covers.  socket, when set,
 * wins over host.  The caller owns the handle (mysql_close()).
 *
 * Threads: Connector/C initialises itself once (pthread_once), so any
 * thread may connect.  A thread that used a connection or a shipper
 * calls caud_db_thread_end() before it exits (mysql_thread_end(); a
 * no-op in Connector/C 3.3, but the client library's contract).
 */
struct st_mysql *caud_db_connect(const caud_db_opts_t *db, char *err,
    size_t errlen);
void caud_db_thread_end(void);

/* applies the missing schema files of schema_dir in order; log may be
 * NULL; returns the number applied or -1 */
int caud_db_migrate(const caud_db_opts_t *db, const char *schema_dir,
    FILE *log, char *err, size_t errlen);


/*
 * The columns of audit_record copied out of a record's canonical bytes
 * (caud_db.c): event, status, actor_user = actor.user, peer =
 * object.id cut at its first '/' (the bare JID), actor_ip = actor.ip,
 * session_id = actor.session_id, transport = actor.transport, msg_type
 * = params.type, stanza_id = params.id, body = params.body.  A value
 * that is missing, not a string or not valid UTF-8 is NULL; a long one
 * is cut to the column's width in characters (caud_column_width[]),
 * never inside a character.  The payload keeps everything.  Pure, so
 * verify can also check that the columns still say what the payload
 * says.
 */
typedef enum {
    CAUD_COL_EVENT = 0,
    CAUD_COL_STATUS,
    CAUD_COL_ACTOR_USER,
    CAUD_COL_PEER,
    CAUD_COL_ACTOR_IP,
    CAUD_COL_SESSION_ID,
    CAUD_COL_TRANSPORT,
    CAUD_COL_MSG_TYPE,
    CAUD_COL_STANZA_ID,
    CAUD_COL_BODY,
    CAUD_NCOLS
} caud_column_e;

typedef struct {
    int64_t  ts_utc_us;              /* 0 when missing */
    size_t   off[CAUD_NCOLS];        /* of the value in buf->data */
    size_t   len[CAUD_NCOLS];        /* bytes */
    uint8_t  null[CAUD_NCOLS];       /* 1: SQL NULL */
} caud_columns_t;

extern const size_t  caud_column_width[CAUD_NCOLS];   /* characters */
extern const char   *caud_column_name[CAUD_NCOLS];

/*
 * Appends the unescaped, cut values to buf (realloc()ed; free it with
 * caud_buf_free()) and records where they are.  Returns 0, 1 when the
 * payload is not a JSON object (every column NULL, ts 0), or -1 when
 * out of memory.
 */
int caud_columns(const void *payload, size_t len, caud_columns_t *c,
    caud_buf_t *buf);


typedef struct caud_shipper_s  caud_shipper_t;

typedef struct {
    uint64_t  shipped;        /* records committed by this shipper */
    uint64_t  batches;        /* transactions committed */
    uint64_t  failed;         /* batches that failed (and were retried) */
    uint64_t  checkpoints;    /* checkpoint notes stored */
    uint64_t  buffer_bytes;   /* the batch's arrays and bytes, now */
    uint64_t  buffer_peak;    /* ... at their largest */
} caud_ship_stats_t;

/*
 * One shipper per thread (it may move between threads, never be used by
 * two at once); it holds no global state, connects lazily and
 * reconnects after any error, and keeps each journal's reader open
 * between calls, so tailing a live journal rereads nothing.  node names
 * this appliance node in the tables (at most 64 bytes).  The thread
 * calls caud_db_thread_end() before it exits.
 */
caud_shipper_t *caud_shipper_new(const caud_db_opts_t *db, const char *dir,
    const char *node, size_t batch, char *err, size_t errlen);

/*
 * Ships what MariaDB lacks of journal writer_id: reads its shipped_seq
 * from audit_journal, reads the journal after it (CRC and chain
 * checked; record shipped_seq's entry_hash, or when retention removed
 * it the next record's prev_hash, must equal the stored head_hash, and
 * a journal that ends before shipped_seq is refused too: the journal
 * and the database disagree), and commits batches of at most `batch`
 * rows (plain INSERT, never IGNORE), each in one transaction together
 * with the new shipped_seq and head_hash, so a replay after a crash
 * inserts nothing twice.  Stops at the journal's
 * end (a torn or in-progress tail is the end) or after the record whose
 * seq is `upto` (0: no limit): a live writer passes its durable seq, so
 * nothing a power cut could still undo reaches MariaDB.  Then stores
 * the checkpoint notes of writer_id whose size is <= shipped_seq.
 * Returns the records shipped, or -1 (err).
 */
int64_t caud_shipper_ship(caud_shipper_t *sh, uint32_t writer_id,
    uint64_t upto, char *err, size_t errlen);

/*
 * Once *flag (read atomically, from any thread) is non-zero, a call to
 * caud_shipper_ship() commits the batch it has in flight and returns
 * without reading more: what is left stays in the journal, durable, for
 * the next call.  A stopping nginx worker sets it so that a graceful
 * stop never waits for a backlog.  NULL (the default): never.
 */
void caud_shipper_set_cancel(caud_shipper_t *sh, const int *flag);

/*
 * Gives back what a backlog's batches took beyond the shipper's resting
 * size (the rows' arrays and the batch's bytes, up to `batch` rows and
 * 8 MB); the next backlog takes them again.  Call it when a call found
 * nothing to ship.  Returns about how many bytes were freed (0: it was
 * at rest): free() keeps them in malloc's arena until malloc_trim().
 */
size_t caud_shipper_shrink(caud_shipper_t *sh);

/* shipped_seq of writer_id as of the last successful call, or 0 */
uint64_t caud_shipper_shipped_seq(caud_shipper_t *sh, uint32_t writer_id);
void caud_shipper_stats(caud_shipper_t *sh, caud_ship_stats_t *st);
void caud_shipper_free(caud_shipper_t *sh);


/* ------------------------------------------------------------------ */
/* verify (caud_verify.c) */

typedef struct {
    const char            *dir;          /* journals; NULL: skip them */
    const caud_db_opts_t  *db;           /* MariaDB; NULL: skip it */
    const char            *node;
    const char            *origin_prefix;  /* "<domain>/audit/<node>" */
    const char            *vkey;         /* signed-note verifier key */
    FILE                  *out;          /* the report */
} caud_verify_opts_t;

/*
 * Retention tombstones (caud_tomb.c, written by caud_retention.c): the
 * rows retention deleted, each keeping its place in the chain.  Loads
 * writer's tombstones whose batch note is signed by vk for
 * "<prefix>/<writer>/prune" and matches them, sorted by seq (malloc()ed;
 * none when the schema has no tombstone table); bad() is told of every
 * batch that does not verify.
 */
typedef struct {
    uint64_t  seq;
    uint8_t   prev[CAUD_HASH_LEN];
    uint8_t   entry[CAUD_HASH_LEN];
} caud_tomb_t;

typedef void (*caud_tomb_bad_pt)(void *data, uint64_t batch,
    const char *why);

int caud_tombs_load(struct st_mysql *m, const char *node, uint32_t writer,
    const caud_verifier_t *vk, const char *prefix, caud_tomb_t **out,
    size_t *n, caud_tomb_bad_pt bad, void *data, char *err, size_t errlen);

/*
 * Checks every journal in dir (CRC, chain from the genesis, every
 * checkpoint file: signature, root, and that the journal is not shorter
 * than it), every journal in MariaDB (each row's entry_hash against its
 * payload and prev_hash, the links between rows, gapless seqs, the
 * stored checkpoints), and MariaDB against the journals where both
 * exist.  Each finding is one line on out naming the journal, the seq
 * and what happened to it: changed, deleted, inserted, reordered,
 * truncated, bad signature.  Returns 0 when all is well, 1 when there
 * are findings, -1 when it could not run (err).
 */
int caud_verify(const caud_verify_opts_t *o, char *err, size_t errlen);


#endif /* _CAUD_H_INCLUDED_ */
