
/*
 * Verify benchmark (issue 3): prints figures, asserts nothing.
 *
 *   cc -O2 -Iaudit/src -Itests/unit $(mariadb_config --cflags) \
 *       -o build/verify_bench tests/bench/verify_bench.c \
 *       audit/src/caud_record.c audit/src/caud_journal.c \
 *       audit/src/caud_journal_read.c audit/src/caud_journal_dir.c \
 *       audit/src/caud_checkpoint.c \
 *       audit/src/caud_db.c audit/src/caud_ship.c audit/src/caud_verify.c \
 *       audit/src/caud_verify_db.c audit/src/caud_tomb.c \
 *       -lcrypto -ljansson -lpthread \
 *       $(mariadb_config --libs)
 *   build/verify_bench [dir] [records] [--socket PATH --user U
 *       --password PW --database DB]
 *
 * Writes one journal of `records` (default 1,000,000) ~600-byte chat
 * message records with a signed checkpoint every 10,000, then times
 * caud_verify() over the directory (every CRC, the chain from the
 * genesis, every checkpoint's signature and root): from the page cache,
 * and after the files were dropped from it (POSIX_FADV_DONTNEED on our
 * own files only).  Each figure is the median of 3 runs.
 *
 * With MariaDB options (a running mariadbd, e.g. one started by
 * tests/lib/mariadb.py) it also applies audit/schema, ships the journal
 * with the real shipper (node "bench-<pid>", so runs never collide) and
 * times verify of the MariaDB rows alone (streamed, every row hashed,
 * linked and its copied columns checked) and of both stores (the
 * journal then also witnesses every row's bytes).
 */


#define _GNU_SOURCE

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caud.h"
#include "unit_files.h"


#define RUNS     3
#define EVERY    10000
#define PREFIX   "bench.example.com/audit/n1"


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* a 1:1 chat message as the module records it: ~600 bytes canonical */
static json_t *
typical_record(uint64_t i)
{
    char           id[32], stanza[512];
    json_t        *rec;
    const char    *body = "Hi Bob, the Q3 numbers are in the shared folder;"
                          " can you check the EMEA tab before the 3 pm call?";
    caud_actor_t   a = {
        "alice@example.com", "uid=alice,ou=people,dc=example,dc=com",
        "s-4f1c9a0e", "192.0.2.10", "websocket", "converse.js/10.1"
    };

    snprintf(id, sizeof(id), "m-%016llx", (unsigned long long) i);
    snprintf(stanza, sizeof(stanza),
             "<message to='bob@example.com' type='chat' id='%s'>"
             "<body>%s</body></message>", id, body);

    rec = caud_record_new("message", CAUD_SUCCESS,
                          1700000000000000 + (int64_t) i);
    if (rec == NULL
        || caud_record_set_actor(rec, &a) != 0
        || caud_record_set_object(rec, "chat", "bob@example.com/phone") != 0
        || caud_record_set_param(rec, "type", json_string("chat")) != 0
        || caud_record_set_param(rec, "id", json_string(id)) != 0
        || caud_record_set_param(rec, "body", json_string(body)) != 0
        || caud_record_set_param(rec, "stanza", json_string(stanza)) != 0)
    {
        json_decref(rec);
        return NULL;
    }

    return rec;
}


static int
write_journal(const char *dir, const char *keyfile, uint64_t n,
    char *vkey, size_t vsize)
{
    int                   rc;
    char                  err[512], note[CAUD_NOTE_MAX];
    size_t                len;
    json_t               *rec;
    uint64_t              i, seq;
    caud_signer_t        *s;
    caud_journal_t       *j;
    caud_checkpoint_t     cp;
    caud_journal_opts_t   o = { 0, 1, 0 };

    if (caud_key_generate(keyfile, err, sizeof(err)) != 0
        || (s = caud_signer_load(keyfile, PREFIX, err, sizeof(err))) == NULL
        || caud_signer_vkey(s, vkey, vsize) != 0)
    {
        fprintf(stderr, "key: %s\n", err);
        return -1;
    }

    if (caud_journal_open(dir, 0, &o, &j, err, sizeof(err)) != 0) {
        fprintf(stderr, "open: %s\n", err);
        caud_signer_free(s);
        return -1;
    }

    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "%s/0", PREFIX);
    rc = 0;

    for (i = 1; rc == 0 && i <= n; i++) {
        rec = typical_record(i);
        rc = (rec && caud_journal_append(j, rec, &seq) == 0) ? 0 : -1;
        json_decref(rec);

        if (rc == 0 && i % EVERY == 0) {
            cp.size = seq;
            memcpy(cp.root, caud_journal_head(j), CAUD_HASH_LEN);
            rc = caud_checkpoint_sign(s, &cp, note, sizeof(note), &len) == 0
                 && caud_checkpoint_store(dir, 0, seq, note, len, err,
                                          sizeof(err)) == 0 ? 0 : -1;
        }
    }

    if (caud_journal_close(j, err, sizeof(err)) != 0) {
        rc = -1;
    }

    caud_signer_free(s);

    return rc;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}


/* the median seconds of RUNS verifies; -1 if one did not pass */
static double
time_verify(const char *dir, const caud_db_opts_t *db, const char *node,
    const char *vkey, int cold)
{
    int                  i, rc;
    char                 err[512];
    FILE                *null;
    double               t[RUNS], t0;
    caud_verify_opts_t   o;

    null = fopen("/dev/null", "w");
    memset(&o, 0, sizeof(o));
    o.dir = dir;
    o.db = db;
    o.node = node;
    o.origin_prefix = PREFIX;
    o.vkey = vkey;
    o.out = null;

    for (i = 0; i < RUNS; i++) {
        if (cold && dir) {
            drop_cache(dir);
        }

        t0 = now();
        rc = caud_verify(&o, err, sizeof(err));
        t[i] = now() - t0;

        if (rc != 0) {
            fprintf(stderr, "verify: rc %d %s\n", rc, err);
            fclose(null);
            return -1;
        }
    }

    fclose(null);
    qsort(t, RUNS, sizeof(double), cmp_double);

    return t[RUNS / 2];
}


/* ships the whole journal with the real shipper; -1 on error */
static int
ship(const char *dir, const caud_db_opts_t *db, const char *node)
{
    char             err[1024];
    double           t0;
    int64_t          n;
    caud_shipper_t  *sh;

    t0 = now();

    if (caud_db_migrate(db, "audit/schema", NULL, err, sizeof(err)) < 0
        || (sh = caud_shipper_new(db, dir, node, 10000, err, sizeof(err)))
           == NULL)
    {
        fprintf(stderr, "mariadb: %s\n", err);
        return -1;
    }

    n = caud_shipper_ship(sh, 0, 0, err, sizeof(err));
    caud_shipper_free(sh);

    if (n < 0) {
        fprintf(stderr, "ship: %s\n", err);
        return -1;
    }

    printf("shipped %lld records in %.2f s (real shipper, batches of "
           "10000)\n", (long long) n, now() - t0);

    return 0;
}


static void
bench_db(const char *dir, const caud_db_opts_t *db, const char *vkey,
    uint64_t n)
{
    char    node[64];
    double  t;

    snprintf(node, sizeof(node), "bench-%d", (int) getpid());

    if (ship(dir, db, node) != 0) {
        return;
    }

    t = time_verify(NULL, db, node, vkey, 0);
    if (t > 0) {
        printf("verify (MariaDB rows):                  %llu records in "
               "%.3f s = %.0f records/s\n", (unsigned long long) n, t,
               n / t);
    }

    t = time_verify(dir, db, node, vkey, 0);
    if (t > 0) {
        printf("verify (both, journal as witness):      %llu + %llu records "
               "in %.3f s\n", (unsigned long long) n,
               (unsigned long long) n, t);
    }
}


int
main(int argc, char **argv)
{
    int             i, use_db;
    char            dir[512], key[600], vkey[CAUD_VKEY_MAX];
    double          t0, tw, warm, cold;
    uint64_t        n;
    struct stat     st;
    caud_db_opts_t  db;

    memset(&db, 0, sizeof(db));
    use_db = 0;

    for (i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--socket") == 0) {
            db.socket = argv[i + 1];
            use_db = 1;
        } else if (strcmp(argv[i], "--user") == 0) {
            db.user = argv[i + 1];
        } else if (strcmp(argv[i], "--password") == 0) {
            db.password = argv[i + 1];
        } else if (strcmp(argv[i], "--database") == 0) {
            db.database = argv[i + 1];
        }
    }

    db.timeout_s = 600;

    snprintf(dir, sizeof(dir), "%s",
             argc > 1 ? argv[1] : "/tmp/caud-verify-bench");
    n = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;

    rmtree(dir);
    if (mkdir(dir, 0700) != 0) {
        perror(dir);
        return 1;
    }

    snprintf(key, sizeof(key), "%s.key", dir);
    if (stat(key, &st) == 0) {
        unlink(key);
    }

    t0 = now();
    if (write_journal(dir, key, n, vkey, sizeof(vkey)) != 0) {
        return 1;
    }
    tw = now() - t0;

    printf("verify bench: %llu records of ~600 bytes, a checkpoint every "
           "%d (%llu), written in %.2f s\n", (unsigned long long) n, EVERY,
           (unsigned long long) (n / EVERY), tw);

    warm = time_verify(dir, NULL, NULL, vkey, 0);
    cold = time_verify(dir, NULL, NULL, vkey, 1);

    if (warm < 0 || cold < 0) {
        return 1;
    }

    printf("verify (journal directory, page cache): %llu records in %.3f s "
           "= %.0f records/s\n", (unsigned long long) n, warm, n / warm);
    printf("verify (journal directory, from disk):  %llu records in %.3f s "
           "= %.0f records/s\n", (unsigned long long) n, cold, n / cold);

    if (use_db) {
        bench_db(dir, &db, vkey, n);
    }

    rmtree(dir);
    unlink(key);

    return 0;
}
