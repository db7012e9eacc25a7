
/*
 * Unit tests for audit/src/caud_record.c and caud_journal.c: canonical
 * encoding, round trips, resume, rotation, torn tails at every byte of
 * the last frame, every bit of a sealed segment flipped (the pattern of
 * systemd's test-journal-verify.c), frames deleted, inserted, reordered
 * and rewritten, write errors, and group commit from a second thread.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caud.h"
#include "unit.h"
#include "unit_files.h"


/* ------------------------------------------------------------------ */
/* helpers */

static int
spit(const char *path, const uint8_t *b, size_t len)
{
    int      fd;
    ssize_t  n;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        return -1;
    }

    n = write(fd, b, len);
    close(fd);

    return (size_t) n == len ? 0 : -1;
}


/* a 1:1 message record as the module will write it */
static json_t *
msg_record(int i, size_t body_len)
{
    char           id[32], body[2048];
    json_t        *rec;
    caud_actor_t   a = {
        "alice@example.com", "uid=alice,ou=people,dc=example,dc=com",
        "s-4f1c9a", "192.0.2.10", "websocket", "converse.js"
    };

    if (body_len >= sizeof(body)) {
        body_len = sizeof(body) - 1;
    }

    memset(body, 'a' + i % 26, body_len);
    body[body_len] = '\0';
    snprintf(id, sizeof(id), "m-%d", i);

    rec = caud_record_new("message", CAUD_SUCCESS, 1700000000000000 + i);
    if (rec == NULL
        || caud_record_set_actor(rec, &a) != 0
        || caud_record_set_object(rec, "chat", id) != 0
        || caud_record_set_param(rec, "to", json_string("bob@example.com"))
        || caud_record_set_param(rec, "type", json_string("chat"))
        || caud_record_set_param_str(rec, "body", body, body_len))
    {
        json_decref(rec);
        return NULL;
    }

    return rec;
}


static int
append_n(caud_journal_t *j, int from, int n, size_t body_len)
{
    int       i, rc, e;
    json_t   *rec;
    uint64_t  seq;

    for (i = from; i < from + n; i++) {
        rec = msg_record(i, body_len);
        if (rec == NULL) {
            return -1;
        }

        rc = caud_journal_append(j, rec, &seq);
        e = errno;
        json_decref(rec);

        if (rc != 0) {
            errno = e;
            return -1;
        }
    }

    return 0;
}


static int
make_journal(const char *dir, unsigned writer, size_t seg, int n,
    size_t body_len)
{
    int                   rc;
    char                  err[512];
    caud_journal_t       *j;
    caud_journal_opts_t   o = { seg, 1, 0 };

    if (caud_journal_open(dir, writer, &o, &j, err, sizeof(err)) != 0) {
        printf("  open: %s\n", err);
        return -1;
    }

    rc = append_n(j, 1, n, body_len);
    if (caud_journal_close(j, err, sizeof(err)) != 0) {
        rc = -1;
    }

    return rc;
}


typedef struct {
    int       rc;           /* last caud_reader_next() */
    uint64_t  count;
    uint64_t  first;
    uint64_t  last;
    size_t    torn;
    char      err[512];
} scan_t;


static void
scan(const char *dir, unsigned writer, uint64_t from, scan_t *s)
{
    caud_frame_t    f;
    caud_reader_t  *r;

    memset(s, 0, sizeof(scan_t));

    if (caud_reader_open(dir, writer, from, &r, s->err, sizeof(s->err))
        != 0)
    {
        s->rc = -2;
        return;
    }

    while ((s->rc = caud_reader_next(r, &f)) == 1) {
        if (s->count++ == 0) {
            s->first = f.seq;
        }
        s->last = f.seq;
    }

    s->torn = caud_reader_torn(r);
    if (s->rc < 0) {
        snprintf(s->err, sizeof(s->err), "%s", caud_reader_error(r));
    }

    caud_reader_close(r);
}


/* offset and length of frame seq in its segment, via the reader */
static int
frame_at(const char *dir, unsigned writer, uint64_t seq, uint64_t *off,
    size_t *flen, char *file, size_t fsize)
{
    int             rc;
    char            err[256];
    caud_frame_t    f;
    caud_reader_t  *r;

    if (caud_reader_open(dir, writer, seq, &r, err, sizeof(err)) != 0) {
        return -1;
    }

    rc = caud_reader_next(r, &f);
    if (rc == 1 && f.seq == seq) {
        *off = f.offset;
        *flen = f.len + CAUD_FRAME_OVERHEAD;
        snprintf(file, fsize, "%s/%s", dir, f.file);
        rc = 0;

    } else {
        rc = -1;
    }

    caud_reader_close(r);

    return rc;
}


/* ------------------------------------------------------------------ */
/* records */

static void
test_record_canonical(void)
{
    char          err[256];
    json_t       *a, *b, *d;
    caud_buf_t    x = { 0 }, y = { 0 }, z = { 0 };
    caud_actor_t  actor = { "alice@example.com", NULL, NULL, "192.0.2.1",
                            "websocket", NULL };
    const char   *want =
        "{\"actor\":{\"ip\":\"192.0.2.1\",\"transport\":\"websocket\","
        "\"user\":\"alice@example.com\"},\"error\":{\"code\":"
        "\"not-authorized\",\"description\":\"invalid credentials\"},"
        "\"event\":\"signin\",\"status\":\"fail\",\"ts_utc_us\":"
        "1700000000000000,\"v\":1}";

    a = caud_record_new("signin", CAUD_FAIL, 1700000000000000);
    caud_record_set_actor(a, &actor);
    caud_record_set_error(a, "not-authorized", "invalid credentials");

    check(caud_record_encode(a, &x) == 0 && x.len == strlen(want)
          && memcmp(x.data, want, x.len) == 0, "record", "known answer",
          NULL);

    /* the same record built in the opposite order, by hand */
    b = json_object();
    json_object_set_new(b, "v", json_integer(1));
    json_object_set_new(b, "ts_utc_us", json_integer(1700000000000000));
    json_object_set_new(b, "status", json_string("fail"));
    json_object_set_new(b, "event", json_string("signin"));
    json_object_set_new(b, "error", json_pack("{s:s,s:s}", "description",
                        "invalid credentials", "code", "not-authorized"));
    json_object_set_new(b, "actor", json_pack("{s:s,s:s,s:s}", "user",
                        "alice@example.com", "transport", "websocket", "ip",
                        "192.0.2.1"));

    check(caud_record_encode(b, &y) == 0 && y.len == x.len
          && memcmp(x.data, y.data, x.len) == 0, "record",
          "stable across key insertion order", NULL);

    d = caud_record_decode(x.data, x.len, err, sizeof(err));
    check(d != NULL && caud_record_encode(d, &z) == 0 && z.len == x.len
          && memcmp(z.data, x.data, x.len) == 0, "record",
          "decode then encode gives the same bytes", err);

    json_decref(a);
    json_decref(b);
    json_decref(d);
    caud_buf_free(&x);
    caud_buf_free(&y);
    caud_buf_free(&z);
}


static void
test_record_unicode(void)
{
    char         err[256];
    json_t      *a, *d, *body;
    caud_buf_t   x = { 0 }, y = { 0 };
    const char  *text =
        "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c "
        "\xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd "
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xed\x95\x9c\xea\xb5\xad\xec"
        "\x96\xb4 \xf0\x9f\xa7\x91\xe2\x80\x8d\xf0\x9f\x92\xbb \xf0\xa0\x80"
        "\x8b";

    a = caud_record_new("message", CAUD_SUCCESS, 1);
    caud_record_set_param_str(a, "body", text, strlen(text));
    /* a non-ASCII key sorts by its UTF-8 bytes, after every ASCII key */
    caud_record_set_param(a, "\xe4\xb8\xad", json_string("cjk key"));
    caud_record_set_param(a, "z", json_string("ascii key"));

    check(caud_record_encode(a, &x) == 0, "unicode", "encode", NULL);

    x.data = realloc(x.data, x.len + 1);
    x.data[x.len] = '\0';

    check(strstr((char *) x.data, text) != NULL
          && strstr((char *) x.data, "\\u") == NULL, "unicode",
          "emoji and CJK stored as raw UTF-8", (char *) x.data);

    check(strstr((char *) x.data, "\"z\":\"ascii key\",\"\xe4\xb8\xad\"")
          != NULL, "unicode", "keys sorted by UTF-8 bytes", NULL);

    d = caud_record_decode(x.data, x.len, err, sizeof(err));
    body = d ? json_object_get(json_object_get(d, "params"), "body") : NULL;

    check(body != NULL && strcmp(json_string_value(body), text) == 0,
          "unicode", "decoded body equals the original", err);

    check(d != NULL && caud_record_encode(d, &y) == 0 && y.len == x.len
          && memcmp(x.data, y.data, x.len) == 0, "unicode",
          "re-encoding is byte-identical", NULL);

    json_decref(a);
    json_decref(d);
    caud_buf_free(&x);
    caud_buf_free(&y);
}


static void
test_record_refuse(void)
{
    char         err[256];
    json_t      *a, *d;
    caud_buf_t   x = { 0 };
    const char  *want = "\"body\":\"a\\n\\t\\\"\\\\\\u0001/\\u0000b\"";

    a = caud_record_new("message", CAUD_SUCCESS, 1);
    caud_record_set_param_str(a, "body", "a\n\t\"\\\x01/\0b", 9);
    check(caud_record_encode(a, &x) == 0
          && memmem(x.data, x.len, want, strlen(want)) != NULL, "refuse",
          "control characters and NUL escaped, '/' not", NULL);

    d = caud_record_decode(x.data, x.len, err, sizeof(err));
    check(d != NULL, "refuse", "NUL in a string decodes", err);
    json_decref(d);

    check(caud_record_set_param(a, "f", json_real(1.5)) == 0
          && caud_record_encode(a, &x) != 0, "refuse", "reals refused",
          NULL);
    json_decref(a);

    a = caud_record_new("message", CAUD_SUCCESS, 1);
    check(caud_record_set_param_str(a, "body", "\xff\xfe", 2) != 0,
          "refuse", "invalid UTF-8 refused", NULL);
    check(caud_record_new("", CAUD_SUCCESS, 1) == NULL
          && caud_record_new("x", (caud_status_e) 7, 1) == NULL, "refuse",
          "empty event or bad status refused", NULL);

    check(caud_record_decode("{\"a\":1,\"a\":2}", 13, err, sizeof(err))
          == NULL, "refuse", "duplicate keys refused", NULL);
    check(caud_record_decode("[1]", 3, err, sizeof(err)) == NULL, "refuse",
          "non-object refused", NULL);
    check(caud_record_decode("{\"a\":1.0}", 9, err, sizeof(err)) == NULL,
          "refuse", "real on decode refused", NULL);
    check(caud_record_decode("{} x", 4, err, sizeof(err)) == NULL,
          "refuse", "trailing garbage refused", NULL);

    json_decref(a);
    caud_buf_free(&x);
}


/* a deterministic generator, so a failure is reproducible */
static uint32_t
rnd(uint32_t *state)
{
    *state = *state * 1103515245 + 12345;
    return *state >> 8;
}


/* strings mixing ASCII, escapes, controls and 2-4 byte UTF-8 */
static json_t *
rnd_string(uint32_t *st)
{
    int          i, n;
    char         buf[256];
    size_t       len;
    const char  *piece;
    static const char  *pieces[] = {
        "a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\r", "\b", "\f",
        "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xe4\xb8\xad",
        "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "<b>", "&amp;"
    };

    n = rnd(st) % 12;
    len = 0;

    for (i = 0; i < n; i++) {
        piece = pieces[rnd(st) % (sizeof(pieces) / sizeof(pieces[0]))];
        memcpy(buf + len, piece, strlen(piece));
        len += strlen(piece);
    }

    if (rnd(st) % 8 == 0) {
        buf[len++] = '\0';
    }

    return json_stringn(buf, len);
}


static json_t *
rnd_value(uint32_t *st, int depth)
{
    int      i, n;
    char     key[64];
    json_t  *v, *k;

    switch (depth > 4 ? rnd(st) % 5 : rnd(st) % 7) {
    case 0:
        return rnd_string(st);
    case 1:
        return json_integer((json_int_t) rnd(st) * (rnd(st) % 2 ? -1 : 1)
                            * (rnd(st) % 3 ? 1 : 1000003));
    case 2:
        return rnd(st) % 2 ? json_true() : json_false();
    case 3:
        return json_null();
    case 4:
        return json_integer(rnd(st) % 2 ? INT64_MIN : INT64_MAX);
    case 5:
        v = json_array();
        n = rnd(st) % 5;
        for (i = 0; i < n; i++) {
            json_array_append_new(v, rnd_value(st, depth + 1));
        }
        return v;
    default:
        v = json_object();
        n = rnd(st) % (rnd(st) % 4 ? 6 : 40);
        for (i = 0; i < n; i++) {
            k = rnd_string(st);
            snprintf(key, sizeof(key), "%s%d",
                     json_string_length(k) ? "" : "k", (int) rnd(st) % 50);
            if (strlen(json_string_value(k)) == json_string_length(k)
                && json_string_length(k) < 30)
            {
                strcat(key, json_string_value(k));
            }
            json_decref(k);
            json_object_set_new(v, key, rnd_value(st, depth + 1));
        }
        return v;
    }
}


/* the direct encoder must stay byte-identical to jansson's dumper */
static void
test_record_jansson(void)
{
    int          i, same;
    char        *d;
    json_t      *v;
    uint32_t     st;
    caud_buf_t   x = { 0 };

    st = 1;
    same = 0;

    for (i = 0; i < 3000; i++) {
        v = json_object();
        json_object_set_new(v, "r", rnd_value(&st, 0));
        json_object_set_new(v, "s", rnd_string(&st));

        x.len = 0;
        d = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

        if (d != NULL && caud_record_encode(v, &x) == 0
            && x.len == strlen(d) && memcmp(x.data, d, x.len) == 0)
        {
            same++;

        } else if (same == i) {
            printf("  first difference at %d:\n  jansson %s\n", i, d);
        }

        free(d);
        json_decref(v);
    }

    check(same == 3000, "encoder", "3000 random records equal json_dumps()",
          NULL);

    /* nesting is bounded, so a hostile record cannot exhaust the stack */
    v = json_object();
    for (i = 0; i < 40; i++) {
        v = json_pack("{s:o}", "n", v);
    }
    x.len = 0;
    check(caud_record_encode(v, &x) != 0, "encoder", "depth > 32 refused",
          NULL);
    json_decref(v);

    v = json_object();
    json_object_setn_new(v, "a\0b", 3, json_true());
    check(caud_record_encode(v, &x) != 0, "encoder", "key with NUL refused",
          NULL);
    json_decref(v);

    caud_buf_free(&x);
}


static void
test_entry_hash(void)
{
    int             i, ok;
    uint8_t         out[CAUD_HASH_LEN], prev[CAUD_HASH_LEN];
    caud_hasher_t  *h;
    /* SHA-256(0x00 || "{}" || 32 zero bytes), by Python's hashlib */
    static const uint8_t  want[CAUD_HASH_LEN] = {
        0x46, 0xe8, 0x27, 0x8e, 0x20, 0x63, 0x12, 0x83,
        0xc5, 0x29, 0x5c, 0xcb, 0xd3, 0xa7, 0xaa, 0x43,
        0x76, 0x5c, 0x78, 0xfb, 0x0a, 0x02, 0x7b, 0x95,
        0x06, 0x25, 0x49, 0x51, 0xb4, 0x11, 0xff, 0x83
    };

    h = caud_hasher_new();
    memset(prev, 0, sizeof(prev));

    ok = h != NULL && caud_hasher_entry(h, "{}", 2, prev, out) == 0;
    for (i = 0; ok && i < CAUD_HASH_LEN; i++) {
        ok = out[i] == want[i];
    }

    check(ok, "hash", "entry_hash = SHA-256(0x00 || record || prev)", NULL);

    caud_hasher_free(h);
}


/* ------------------------------------------------------------------ */
/* journal */

static void
test_roundtrip(const char *base)
{
    int                   rc, ok, nrec;
    char                  dir[512], err[512];
    json_t               *d;
    uint8_t               prev[CAUD_HASH_LEN], head[CAUD_HASH_LEN];
    uint64_t              seq;
    caud_buf_t            raw = { 0 };
    caud_frame_t          f;
    caud_reader_t        *r;
    caud_journal_t       *j;
    scan_t                s;

    snprintf(dir, sizeof(dir), "%s/rt", base);
    mkdir(dir, 0700);

    rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
    check(rc == 0, "roundtrip", "open new", err);
    if (rc != 0) {
        return;
    }

    check(caud_journal_last_seq(j) == 0 && caud_journal_next_seq(j) == 1
          && caud_journal_durable_seq(j) == 0, "roundtrip",
          "new journal starts before seq 1", NULL);

    check(append_n(j, 1, 100, 200) == 0 && caud_journal_last_seq(j) == 100
          && caud_journal_written_seq(j) == 100, "roundtrip",
          "100 appends", caud_journal_error(j));

    /* the raw path: the caller encodes, with the seq it will get */
    d = msg_record(101, 10);
    json_object_set_new(d, "seq", json_integer(caud_journal_next_seq(j)));
    caud_record_encode(d, &raw);
    json_decref(d);

    check(caud_journal_append_raw(j, raw.data, raw.len, &seq) == 0
          && seq == 101, "roundtrip", "append_raw", caud_journal_error(j));
    caud_buf_free(&raw);

    check(caud_journal_durable_seq(j) == 0
          && caud_journal_sync(j, err, sizeof(err)) == 0
          && caud_journal_durable_seq(j) == 101, "roundtrip",
          "sync publishes durable_seq", err);

    memcpy(head, caud_journal_head(j), CAUD_HASH_LEN);
    check(caud_journal_close(j, err, sizeof(err)) == 0, "roundtrip",
          "close", err);

    rc = caud_reader_open(dir, 0, 1, &r, err, sizeof(err));
    check(rc == 0, "roundtrip", "reader open", err);
    if (rc != 0) {
        return;
    }

    memset(prev, 0, sizeof(prev));
    ok = 1;
    nrec = 0;

    while ((rc = caud_reader_next(r, &f)) == 1) {
        nrec++;
        d = caud_record_decode(f.payload, f.len, err, sizeof(err));

        ok = ok && d != NULL && f.seq == (uint64_t) nrec
             && json_integer_value(json_object_get(d, "seq")) == nrec
             && memcmp(f.prev_hash, prev, CAUD_HASH_LEN) == 0;

        memcpy(prev, f.entry_hash, CAUD_HASH_LEN);
        json_decref(d);
    }

    check(rc == 0 && nrec == 101 && ok, "roundtrip",
          "reader returns every record, chained, in order",
          caud_reader_error(r));
    check(memcmp(prev, head, CAUD_HASH_LEN) == 0 && caud_reader_torn(r) == 0,
          "roundtrip", "reader's last entry_hash is the writer's head",
          NULL);

    caud_reader_close(r);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 101, "roundtrip", "scan", s.err);
}


static void
test_resume(const char *base)
{
    int              rc, n;
    char             dir[512], err[512];
    uint8_t          head[CAUD_HASH_LEN];
    caud_frame_t     f;
    caud_reader_t   *r;
    caud_journal_t  *j;
    scan_t           s;

    snprintf(dir, sizeof(dir), "%s/rt", base);

    scan(dir, 0, 101, &s);
    memset(head, 0, sizeof(head));
    if (caud_reader_open(dir, 0, 101, &r, err, sizeof(err)) == 0) {
        if (caud_reader_next(r, &f) == 1) {
            memcpy(head, f.entry_hash, CAUD_HASH_LEN);
        }
        caud_reader_close(r);
    }

    rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
    check(rc == 0, "resume", "reopen", err);
    if (rc != 0) {
        return;
    }

    check(caud_journal_last_seq(j) == 101
          && caud_journal_durable_seq(j) == 101
          && memcmp(caud_journal_head(j), head, CAUD_HASH_LEN) == 0,
          "resume", "continues from the last seq and entry_hash", NULL);

    check(append_n(j, 102, 20, 50) == 0 && caud_journal_last_seq(j) == 121,
          "resume", "appends after reopen", caud_journal_error(j));

    /* a tailing reader sees new records as they are written */
    rc = caud_reader_open(dir, 0, 122, &r, err, sizeof(err));
    check(rc == 0 && caud_reader_next(r, &f) == 0, "resume",
          "tailing reader at the end", err);

    append_n(j, 122, 3, 50);
    n = 0;
    while (rc == 0 && caud_reader_next(r, &f) == 1) {
        n++;
    }

    check(n == 3 && f.seq == 124, "resume", "tailing reader sees appends",
          NULL);

    if (rc == 0) {
        caud_reader_close(r);
    }

    check(caud_journal_close(j, err, sizeof(err)) == 0, "resume", "close",
          err);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 124 && s.last == 124, "resume",
          "whole chain verifies across the reopen", s.err);

    scan(dir, 0, 110, &s);
    check(s.rc == 0 && s.first == 110 && s.count == 15, "resume",
          "reader starts at a given seq", s.err);

    scan(dir, 0, 125, &s);
    check(s.rc == 0 && s.count == 0, "resume", "reader past the end",
          s.err);
}


static void
test_lock(const char *base)
{
    char             dir[512], err[512];
    caud_journal_t  *a, *b, *c;

    snprintf(dir, sizeof(dir), "%s/lock", base);
    mkdir(dir, 0700);

    a = b = c = NULL;
    caud_journal_open(dir, 7, NULL, &a, err, sizeof(err));

    check(a != NULL
          && caud_journal_open(dir, 7, NULL, &b, err, sizeof(err)) != 0
          && strstr(err, "lock") != NULL, "lock",
          "a second writer on one journal is refused", err);
    check(caud_journal_open(dir, 8, NULL, &c, err, sizeof(err)) == 0,
          "lock", "another writer id in the same directory", err);

    caud_journal_close(a, NULL, 0);
    caud_journal_close(b, NULL, 0);
    caud_journal_close(c, NULL, 0);
}


static void
test_rotation(const char *base)
{
    int                   i, rc, nseg;
    char                  dir[512], err[512], path[1024];
    caud_journal_t       *j;
    caud_journal_opts_t   o = { 4096, 0, 0 };
    scan_t                s;
    struct stat           st;

    snprintf(dir, sizeof(dir), "%s/rot", base);
    mkdir(dir, 0700);

    rc = caud_journal_open(dir, 3, &o, &j, err, sizeof(err));
    check(rc == 0, "rotation", "open", err);
    if (rc != 0) {
        return;
    }

    rc = 0;
    for (i = 0; i < 20 && rc == 0; i++) {
        rc = append_n(j, 1 + i * 10, 10, 300)
             | caud_journal_sync(j, err, sizeof(err));
    }

    check(rc == 0 && caud_journal_durable_seq(j) == 200, "rotation",
          "200 records with a sync every 10", caud_journal_error(j));
    check(caud_journal_close(j, err, sizeof(err)) == 0, "rotation", "close",
          err);

    nseg = 0;
    for (i = 1; i <= 200; i++) {
        if (stat(seg_path(path, sizeof(path), dir, 3, i), &st) == 0) {
            nseg++;
            check(st.st_size <= 4096 && (st.st_mode & 0777) == 0600,
                  "rotation", "segment size and mode", path);
        }
    }

    check(nseg > 10, "rotation", "many segments", NULL);

    scan(dir, 3, 1, &s);
    check(s.rc == 0 && s.count == 200, "rotation",
          "reader crosses segments", s.err);

    scan(dir, 3, 150, &s);
    check(s.rc == 0 && s.first == 150 && s.count == 51, "rotation",
          "reader starts mid-journal", s.err);

    rc = caud_journal_open(dir, 3, &o, &j, err, sizeof(err));
    check(rc == 0 && caud_journal_last_seq(j) == 200 && append_n(j, 201,
          30, 300) == 0 && caud_journal_close(j, err, sizeof(err)) == 0,
          "rotation", "resume in the last segment", err);

    scan(dir, 3, 1, &s);
    check(s.rc == 0 && s.count == 230, "rotation", "chain intact", s.err);
}


/*
 * prealloc: zeros ahead of the live segment's records.  A reader that
 * reached them reads what was written over them since; rotation and
 * close cut them off; a writer that died leaves them, and the next
 * open cuts them like any torn tail.
 */
static void
test_prealloc(const char *base)
{
    int                   i, rc, status;
    char                  dir[512], err[512], path[1024];
    pid_t                 pid;
    uint64_t              first, end;
    caud_frame_t          f;
    caud_reader_t        *r;
    caud_journal_t       *j;
    caud_journal_opts_t   o = { 16384, 0, 0, 4096 };
    scan_t                s;
    struct stat           st;

    snprintf(dir, sizeof(dir), "%s/prealloc", base);
    mkdir(dir, 0700);

    rc = caud_journal_open(dir, 4, &o, &j, err, sizeof(err));
    check(rc == 0, "prealloc", "open", err);
    if (rc != 0) {
        return;
    }

    rc = append_n(j, 1, 5, 100) | caud_journal_sync(j, err, sizeof(err));
    caud_journal_live_end(j, &first, &end);
    check(rc == 0 && first == 1
          && stat(seg_path(path, sizeof(path), dir, 4, 1), &st) == 0
          && (uint64_t) st.st_size > end, "prealloc",
          "zeros after the live segment's records", err);

    rc = caud_reader_open(dir, 4, 1, &r, err, sizeof(err));
    check(rc == 0, "prealloc", "reader", err);
    if (rc != 0) {
        caud_journal_close(j, NULL, 0);
        return;
    }

    /* three of five, as a shipper reads up to the durable seq: its
     * buffer holds the other two and zeros where the next ones go */
    for (i = 0; i < 3 && caud_reader_next(r, &f) == 1; i++) { /* void */ }

    rc = append_n(j, 6, 5, 100) | caud_journal_sync(j, err, sizeof(err));
    for (i = 0; caud_reader_next(r, &f) == 1; i++) { /* void */ }
    check(rc == 0 && i == 7 && f.seq == 10, "prealloc",
          "a reader that buffered zeros reads what was written over them",
          caud_reader_error(r));
    check(caud_reader_torn(r) > 0, "prealloc",
          "the reader ends at the zeros", NULL);
    caud_reader_close(r);

    rc = append_n(j, 11, 190, 300);
    check(rc == 0 && caud_journal_close(j, err, sizeof(err)) == 0,
          "prealloc", "rotations and close", err);

    scan(dir, 4, 1, &s);
    check(s.rc == 0 && s.count == 200 && s.torn == 0, "prealloc",
          "closed: every segment ends at its last frame", s.err);

    /* a writer that dies leaves its zeros behind */
    pid = fork();
    if (pid == 0) {
        if (caud_journal_open(dir, 4, &o, &j, err, sizeof(err)) != 0
            || append_n(j, 201, 3, 100) != 0
            || caud_journal_sync(j, err, sizeof(err)) != 0)
        {
            _exit(1);
        }
        _exit(0);
    }

    check(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)
          && WEXITSTATUS(status) == 0, "prealloc", "a writer dies", NULL);

    scan(dir, 4, 1, &s);
    check(s.rc == 0 && s.count == 203 && s.torn > 0, "prealloc",
          "its zeros are a torn tail", s.err);

    rc = caud_journal_open(dir, 4, &o, &j, err, sizeof(err));
    check(rc == 0 && caud_journal_last_seq(j) == 203
          && append_n(j, 204, 2, 100) == 0
          && caud_journal_close(j, err, sizeof(err)) == 0, "prealloc",
          "the next writer resumes after them", err);

    scan(dir, 4, 1, &s);
    check(s.rc == 0 && s.count == 205 && s.torn == 0, "prealloc",
          "chain intact", s.err);
}


static void
test_backpressure(const char *base)
{
    int                   i, rc;
    char                  dir[512], err[512];
    caud_journal_t       *j;
    caud_journal_opts_t   o = { 1024, 0, 0 }, off = { 1024, 1, 0 };
    scan_t                s;

    snprintf(dir, sizeof(dir), "%s/bp", base);
    mkdir(dir, 0700);

    if (caud_journal_open(dir, 0, &o, &j, err, sizeof(err)) != 0) {
        check(0, "backpressure", "open", err);
        return;
    }

    /* 1 KiB segments, ~900-byte frames: one record per segment */
    for (i = 1; i <= CAUD_RETIRED_MAX + 1; i++) {
        if (append_n(j, i, 1, 700) != 0) {
            break;
        }
    }

    rc = append_n(j, i, 1, 700);
    check(i == CAUD_RETIRED_MAX + 2 && rc != 0 && errno == EAGAIN,
          "backpressure", "appends stop when segments await sync",
          caud_journal_error(j));

    check(caud_journal_sync(j, err, sizeof(err)) == 0
          && append_n(j, i, 1, 700) == 0, "backpressure",
          "and resume after a sync", caud_journal_error(j));

    caud_journal_close(j, NULL, 0);

    if (caud_journal_open(dir, 1, &off, &j, err, sizeof(err)) != 0) {
        check(0, "backpressure", "open no_sync", err);
        return;
    }

    check(append_n(j, 1, 40, 700) == 0
          && caud_journal_close(j, err, sizeof(err)) == 0, "backpressure",
          "fsync policy off never waits", err);

    scan(dir, 1, 1, &s);
    check(s.rc == 0 && s.count == 40, "backpressure", "no_sync chain",
          s.err);
}


/* truncate the last frame at every byte, then reopen and append */
static void
test_torn(const char *base)
{
    int              rc, bad_scan, bad_open;
    char             dir[512], err[512], file[1024], detail[1024];
    size_t           len, flen, k;
    uint8_t         *orig;
    uint64_t         off;
    caud_journal_t  *j;
    scan_t           s;
    struct stat      st;
    static uint8_t   zeros[1000];

    snprintf(dir, sizeof(dir), "%s/torn", base);
    mkdir(dir, 0700);

    if (make_journal(dir, 0, 0, 10, 100) != 0
        || frame_at(dir, 0, 10, &off, &flen, file, sizeof(file)) != 0
        || (orig = slurp(file, &len)) == NULL)
    {
        check(0, "torn", "setup", NULL);
        return;
    }

    bad_scan = bad_open = 0;
    detail[0] = '\0';

    for (k = 0; k < flen; k++) {
        spit(file, orig, off + k);

        scan(dir, 0, 1, &s);
        if (s.rc != 0 || s.count != 9 || s.torn != k) {
            bad_scan++;
            snprintf(detail, sizeof(detail), "cut at %zu: rc %d count %llu "
                     "torn %zu %s", k, s.rc, (unsigned long long) s.count,
                     s.torn, s.err);
        }

        rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
        if (rc != 0 || caud_journal_last_seq(j) != 9
            || append_n(j, 10, 1, 100) != 0
            || caud_journal_last_seq(j) != 10
            || caud_journal_close(j, err, sizeof(err)) != 0)
        {
            bad_open++;
            snprintf(detail, sizeof(detail), "reopen at %zu: %s", k, err);
            if (rc == 0) {
                caud_journal_close(j, NULL, 0);
            }
            continue;
        }

        scan(dir, 0, 1, &s);
        if (s.rc != 0 || s.count != 10 || stat(file, &st) != 0
            || (size_t) st.st_size != len)
        {
            bad_open++;
            snprintf(detail, sizeof(detail), "after append at %zu: %s", k,
                     s.err);
        }
    }

    check(bad_scan == 0, "torn", "reader ends cleanly at every cut",
          detail);
    check(bad_open == 0, "torn",
          "writer truncates every cut and the chain continues", detail);

    /* a crash can leave the file longer, filled with zeros */
    spit(file, orig, len);
    rc = open(file, O_WRONLY | O_APPEND);
    check(rc >= 0 && write(rc, zeros, sizeof(zeros)) == sizeof(zeros),
          "torn", "append zeros", NULL);
    close(rc);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 10 && s.torn == sizeof(zeros), "torn",
          "a zero-filled tail is a torn tail", s.err);

    rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
    check(rc == 0 && caud_journal_last_seq(j) == 10
          && append_n(j, 11, 1, 10) == 0, "torn",
          "writer cuts a zero-filled tail", err);
    caud_journal_close(j, NULL, 0);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 11, "torn", "chain after zero tail",
          s.err);

    free(orig);
}


/*
 * Every bit of a segment flipped in turn: each flip must make the
 * reader fail, never return fewer records quietly, and never pass.
 */
static int
flip_all(const char *dir, const char *file, uint64_t total, int writer_open,
    char *detail, size_t dsize)
{
    int              fd, undetected, rc;
    char             err[512];
    size_t           len, bit;
    uint8_t         *orig, b;
    caud_journal_t  *j;
    scan_t           s;

    orig = slurp(file, &len);
    fd = open(file, O_WRONLY);
    if (orig == NULL || fd < 0) {
        free(orig);
        return -1;
    }

    undetected = 0;

    for (bit = 0; bit < len * 8; bit++) {
        b = orig[bit / 8] ^ (uint8_t) (1u << (bit % 8));
        if (pwrite(fd, &b, 1, bit / 8) != 1) {
            undetected++;
            break;
        }

        scan(dir, 0, 1, &s);
        if (s.rc != -1) {
            undetected++;
            snprintf(detail, dsize, "bit %zu (byte %zu): rc %d, %llu of "
                     "%llu records", bit, bit / 8, s.rc,
                     (unsigned long long) s.count,
                     (unsigned long long) total);
        }

        if (writer_open) {
            rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
            if (rc == 0) {
                undetected++;
                snprintf(detail, dsize, "bit %zu: writer opened", bit);
                caud_journal_close(j, NULL, 0);
                spit(file, orig, len);

            } else if (strstr(err, "offset") == NULL) {
                undetected++;
                snprintf(detail, dsize, "bit %zu: %s", bit, err);
            }
        }

        if (pwrite(fd, &orig[bit / 8], 1, bit / 8) != 1) {
            undetected++;
            break;
        }
    }

    close(fd);
    free(orig);

    return undetected;
}


static void
test_bitflip(const char *base)
{
    int      n;
    char     dir[512], file[1024], detail[1024];
    scan_t   s;

    snprintf(dir, sizeof(dir), "%s/flip", base);
    mkdir(dir, 0700);

    /* 503-byte frames in 1600-byte segments: 3 frames a segment, the
     * live one (7) has 2 */
    if (make_journal(dir, 0, 1600, 8, 60) != 0) {
        check(0, "bitflip", "setup", NULL);
        return;
    }

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 8, "bitflip", "pristine journal", s.err);

    detail[0] = '\0';
    n = flip_all(dir, seg_path(file, sizeof(file), dir, 0, 1), 8, 0, detail,
                 sizeof(detail));
    check(n == 0, "bitflip", "every bit of a sealed segment", detail);

    detail[0] = '\0';
    n = flip_all(dir, seg_path(file, sizeof(file), dir, 0, 7), 8, 1, detail,
                 sizeof(detail));
    check(n == 0, "bitflip",
          "every bit of the live segment (reader and writer open)", detail);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 8, "bitflip", "restored journal", s.err);
}


/* recomputes a frame's trailing CRC32C, as a forger would */
static void
fix_crc(uint8_t *frame, size_t flen)
{
    int       t;
    size_t    q;
    uint32_t  c;

    c = 0xFFFFFFFF;

    for (q = 0; q < flen - 4; q++) {
        c ^= frame[q];
        for (t = 0; t < 8; t++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78 : c >> 1;
        }
    }

    c = ~c;
    frame[flen - 4] = (uint8_t) c;
    frame[flen - 3] = (uint8_t) (c >> 8);
    frame[flen - 2] = (uint8_t) (c >> 16);
    frame[flen - 1] = (uint8_t) (c >> 24);
}


/* rebuilds a segment from the frames of seqs in order[] */
static int
rebuild(const char *dir, const uint8_t *orig, const uint64_t *offs,
    const size_t *lens, const int *order, int n)
{
    int       i;
    char      file[1024];
    size_t    len;
    uint8_t  *b;

    b = malloc(CAUD_SEGMENT_HDR_LEN + 64 * 1024);
    if (b == NULL) {
        return -1;
    }

    memcpy(b, orig, CAUD_SEGMENT_HDR_LEN);
    len = CAUD_SEGMENT_HDR_LEN;

    for (i = 0; i < n; i++) {
        memcpy(b + len, orig + offs[order[i]], lens[order[i]]);
        len += lens[order[i]];
    }

    i = spit(seg_path(file, sizeof(file), dir, 0, 1), b, len);
    free(b);

    return i;
}


static void
test_tamper(const char *base)
{
    int              i;
    char             dir[512], file[1024], err[512], path2[1024];
    size_t           len, lens[9];
    uint8_t         *orig, *b;
    uint64_t         offs[9];
    caud_hasher_t   *h;
    caud_journal_t  *j;
    scan_t           s;
    const int        del[] = { 1, 2, 3, 5, 6, 7, 8 };
    const int        swap[] = { 1, 2, 3, 5, 4, 6, 7, 8 };
    const int        dup[] = { 1, 2, 3, 4, 4, 5, 6, 7, 8 };
    const int        first[] = { 2, 3, 4, 5, 6, 7, 8 };

    snprintf(dir, sizeof(dir), "%s/tamper", base);
    mkdir(dir, 0700);

    if (make_journal(dir, 0, 0, 8, 40) != 0) {
        check(0, "tamper", "setup", NULL);
        return;
    }

    for (i = 1; i <= 8; i++) {
        frame_at(dir, 0, i, &offs[i], &lens[i], file, sizeof(file));
    }

    orig = slurp(file, &len);
    if (orig == NULL) {
        check(0, "tamper", "read segment", NULL);
        return;
    }

    rebuild(dir, orig, offs, lens, del, 7);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && strstr(s.err, "seq 5") && strstr(s.err, "offset"),
          "tamper", "deleted frame detected, named by seq and offset",
          s.err);

    check(caud_journal_open(dir, 0, NULL, &j, err, sizeof(err)) != 0,
          "tamper", "writer refuses a damaged last segment", err);

    rebuild(dir, orig, offs, lens, swap, 8);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && s.count == 3, "tamper", "reordered frames detected",
          s.err);

    rebuild(dir, orig, offs, lens, dup, 9);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && s.count == 4, "tamper", "duplicated frame detected",
          s.err);

    rebuild(dir, orig, offs, lens, first, 7);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && s.count == 0, "tamper", "first frame deleted",
          s.err);

    /* an editor who fixes the CRCs but cannot fix the chain */
    b = malloc(len);
    memcpy(b, orig, len);
    b[offs[3] + CAUD_FRAME_HDR_LEN + 5] ^= 0x01;
    fix_crc(b + offs[3], lens[3]);

    spit(file, b, len);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && strstr(s.err, "entry_hash does not match"),
          "tamper", "edited record with a fixed CRC", s.err);

    /* a reader that starts at it recomputes its hash; one positioned
     * past it walks the frames before from_seq by CRC and link only
     * (its anchor is the stored hash, as a segment header's would be) */
    scan(dir, 0, 3, &s);
    check(s.rc == -1 && s.count == 0
          && strstr(s.err, "entry_hash does not match"), "tamper",
          "edited record is the first one read", s.err);
    scan(dir, 0, 5, &s);
    check(s.rc == 0 && s.first == 5 && s.count == 4, "tamper",
          "reader positioned past an edited record trusts stored hashes",
          s.err);

    /* ... and who recomputes that frame's entry_hash too */
    h = caud_hasher_new();
    caud_hasher_entry(h, b + offs[3] + CAUD_FRAME_HDR_LEN,
                      lens[3] - CAUD_FRAME_OVERHEAD, b + offs[3] + 24,
                      b + offs[3] + 56);
    caud_hasher_free(h);
    fix_crc(b + offs[3], lens[3]);

    spit(file, b, len);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && s.count == 3 && strstr(s.err, "seq 4"), "tamper",
          "edited record with fixed CRC and hash breaks the next link",
          s.err);

    scan(dir, 0, 6, &s);
    check(s.rc == -1 && s.count == 0 && strstr(s.err, "seq 4"), "tamper",
          "positioning a reader still checks every link", s.err);

    free(b);
    spit(file, orig, len);
    free(orig);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 8, "tamper", "restored", s.err);

    /* a segment passed off as another writer's */
    rename(file, seg_path(path2, sizeof(path2), dir, 5, 1));
    scan(dir, 5, 1, &s);
    check(s.rc == -1 && strstr(s.err, "another writer"), "tamper",
          "renamed segment detected", s.err);
    rename(path2, file);
}


static void
test_segments(const char *base)
{
    int              rc, fd;
    char             dir[512], dir2[512], err[512], file[1024], f2[1024];
    size_t           len, flen;
    uint64_t         off;
    uint8_t         *orig;
    caud_journal_t  *j;
    scan_t           s;

    snprintf(dir, sizeof(dir), "%s/seg", base);
    mkdir(dir, 0700);

    /* 3 records a segment: 1, 4, 7, 10 */
    if (make_journal(dir, 0, 1600, 10, 60) != 0) {
        check(0, "segments", "setup", NULL);
        return;
    }

    seg_path(file, sizeof(file), dir, 0, 4);
    orig = slurp(file, &len);

    /* a sealed segment cut inside a frame, and at a frame boundary */
    frame_at(dir, 0, 5, &off, &flen, f2, sizeof(f2));
    check(strcmp(f2, file) == 0, "segments", "frame 5 is in segment 4",
          f2);

    check(truncate(file, off - 100) == 0, "segments", "cut", file);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && s.count == 3 && strstr(s.err, "inside a frame"),
          "segments", "a sealed segment cut inside a frame", s.err);

    check(spit(file, orig, len) == 0 && truncate(file, off) == 0,
          "segments", "restore and cut", file);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && s.count == 4 && strstr(s.err, "missing"),
          "segments", "a sealed segment cut at a frame boundary", s.err);

    unlink(file);
    scan(dir, 0, 1, &s);
    check(s.rc == -1 && strstr(s.err, "missing"), "segments",
          "a deleted middle segment", s.err);

    spit(file, orig, len);
    free(orig);

    /* the first segment pruned by retention */
    seg_path(f2, sizeof(f2), dir, 0, 1);
    orig = slurp(f2, &len);
    unlink(f2);

    scan(dir, 0, 1, &s);
    check(s.rc == -2, "segments", "reader refuses a pruned seq", s.err);
    scan(dir, 0, 4, &s);
    check(s.rc == 0 && s.count == 7 && s.first == 4, "segments",
          "reader from the oldest kept segment", s.err);

    spit(f2, orig, len);
    free(orig);

    /* a crash right after creating a segment: empty or half a header */
    seg_path(file, sizeof(file), dir, 0, 11);
    fd = open(file, O_WRONLY | O_CREAT, 0600);
    close(fd);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 10, "segments",
          "an empty newest segment is the end", s.err);

    rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
    check(rc == 0 && caud_journal_last_seq(j) == 10
          && access(file, F_OK) != 0, "segments",
          "writer drops an empty newest segment", err);
    if (rc == 0) {
        caud_journal_close(j, NULL, 0);
    }

    /* one segment only, and it is empty: start at seq 1 again */
    snprintf(dir2, sizeof(dir2), "%s/seg1", base);
    mkdir(dir2, 0700);
    seg_path(file, sizeof(file), dir2, 0, 1);
    fd = open(file, O_WRONLY | O_CREAT, 0600);
    check(fd >= 0 && write(fd, "CAUDSEG1", 8) == 8, "segments",
          "half a header", file);
    close(fd);

    rc = caud_journal_open(dir2, 0, NULL, &j, err, sizeof(err));
    check(rc == 0 && caud_journal_last_seq(j) == 0
          && append_n(j, 1, 2, 10) == 0, "segments",
          "writer restarts a journal whose only segment has half a header",
          err);
    if (rc == 0) {
        caud_journal_close(j, NULL, 0);
    }

    scan(dir2, 0, 1, &s);
    check(s.rc == 0 && s.count == 2, "segments", "restarted chain", s.err);
}


static void
test_write_error(const char *base)
{
    int              rc, e;
    char             dir[512], err[512], file[1024];
    uint64_t         off;
    size_t           flen;
    caud_journal_t  *j;
    scan_t           s;
    struct rlimit    old, lim;
    struct stat      st;

    snprintf(dir, sizeof(dir), "%s/werr", base);
    mkdir(dir, 0700);

    if (caud_journal_open(dir, 0, NULL, &j, err, sizeof(err)) != 0
        || append_n(j, 1, 5, 100) != 0)
    {
        check(0, "write error", "setup", err);
        return;
    }

    frame_at(dir, 0, 5, &off, &flen, file, sizeof(file));

    /* the file size limit stands in for a full disk: the write stops
     * part-way with EFBIG, like ENOSPC would */
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = off + flen + 100;
    setrlimit(RLIMIT_FSIZE, &lim);

    rc = append_n(j, 6, 1, 600);
    e = errno;
    setrlimit(RLIMIT_FSIZE, &old);

    check(rc != 0 && e == EFBIG && stat(file, &st) == 0
          && (uint64_t) st.st_size == off + flen, "write error",
          "a failed write is cut off and reported", caud_journal_error(j));

    check(caud_journal_last_seq(j) == 5 && append_n(j, 6, 2, 600) == 0
          && caud_journal_last_seq(j) == 7, "write error",
          "the next append reuses the seq and succeeds",
          caud_journal_error(j));

    caud_journal_close(j, NULL, 0);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 7, "write error", "chain intact", s.err);
}


/* a flat message record, body of body_len bytes */
static int
append_flat(caud_journal_t *j, int i, size_t body_len, int batch,
    uint64_t *seq)
{
    char         body[2048];
    caud_flat_t  r;

    if (body_len >= sizeof(body)) {
        body_len = sizeof(body) - 1;
    }

    memset(body, 'a' + i % 26, body_len);
    memset(&r, 0, sizeof(caud_flat_t));

    r.event = "message";
    r.status = CAUD_SUCCESS;
    r.ts_utc_us = 1700000000000000 + i;
    r.actor.user = "alice@example.com";
    r.object_type = "jid";
    r.object_id = "bob@example.com";
    r.object_id_len = 15;
    r.params[0].key = "body";
    r.params[0].s = body;
    r.params[0].len = body_len;
    r.nparams = 1;

    return batch ? caud_journal_append_flat_batch(j, &r, seq)
                 : caud_journal_append_flat(j, &r, seq);
}


/*
 * A batched frame always waits for the flush, whose caller then asks for
 * the sync: past the batch's 256 KiB the frames before it are written
 * and it starts the next batch.  (It used to be written at once, and a
 * turn whose last message did that waited for a sync nobody asked for.)
 */
static void
test_batch_full(const char *base)
{
    int                   i, rc, pending;
    char                  dir[512], err[512];
    uint64_t              seq;
    caud_journal_t       *j;
    caud_journal_opts_t   o = { 4 * 1024 * 1024, 0, 0 };
    scan_t                s;

    snprintf(dir, sizeof(dir), "%s/batch-full", base);
    mkdir(dir, 0700);

    if (caud_journal_open(dir, 5, &o, &j, err, sizeof(err)) != 0) {
        check(0, "batch", "open a journal for a full batch", err);
        return;
    }

    /* 300 frames of about 2.2 KiB: the batch fills twice */
    rc = 0;
    pending = 1;

    for (i = 1; i <= 300; i++) {
        rc |= append_flat(j, i, 2000, 1, &seq);
        pending &= (caud_journal_written_seq(j) < caud_journal_last_seq(j));
    }

    check(rc == 0 && pending && caud_journal_written_seq(j) > 0
          && caud_journal_written_seq(j) < 300, "batch",
          "past 256 KiB the batch is written, the last frame still waits",
          caud_journal_error(j));

    check(caud_journal_flush(j) == 0 && caud_journal_written_seq(j) == 300,
          "batch", "the flush writes the rest", caud_journal_error(j));

    caud_journal_close(j, NULL, 0);

    scan(dir, 5, 1, &s);
    check(s.rc == 0 && s.count == 300 && s.last == 300, "batch",
          "chain intact across full batches", s.err);
}


/*
 * Batched appends: nothing reaches the file, written_seq or a sync
 * before the flush; one flush writes them all; an immediate append
 * writes the batch before itself; a batch that does not fit in the
 * segment ends it; a failed flush loses the whole batch and the seqs
 * are reused with the chain intact.
 */
static void
test_batch(const char *base)
{
    int                   i, rc, e;
    char                  dir[512], err[512], file[1024];
    uint64_t              seq, off;
    size_t                flen;
    struct stat           st, st2;
    struct rlimit         old, lim;
    caud_journal_t       *j;
    caud_journal_opts_t   o = { 4096, 0, 0 };
    scan_t                s;

    snprintf(dir, sizeof(dir), "%s/batch", base);
    mkdir(dir, 0700);

    if (caud_journal_open(dir, 5, &o, &j, err, sizeof(err)) != 0) {
        check(0, "batch", "open", err);
        return;
    }

    seg_path(file, sizeof(file), dir, 5, 1);
    stat(file, &st);

    rc = 0;
    for (i = 1; i <= 3; i++) {
        rc |= append_flat(j, i, 50, 1, &seq);
    }

    check(rc == 0 && seq == 3 && caud_journal_last_seq(j) == 3
          && caud_journal_written_seq(j) == 0, "batch",
          "batched frames take seqs, not written_seq", caud_journal_error(j));

    check(caud_journal_sync(j, err, sizeof(err)) == 0
          && caud_journal_durable_seq(j) == 0 && stat(file, &st2) == 0
          && st2.st_size == st.st_size, "batch",
          "a sync before the flush covers nothing", err);

    check(caud_journal_flush(j) == 0 && caud_journal_written_seq(j) == 3
          && caud_journal_sync(j, err, sizeof(err)) == 0
          && caud_journal_durable_seq(j) == 3, "batch",
          "the flush writes them, the next sync covers them", err);

    rc = append_flat(j, 4, 50, 1, &seq)
         | append_flat(j, 5, 50, 0, &seq);
    check(rc == 0 && caud_journal_written_seq(j) == 5, "batch",
          "an immediate append writes the batch before it", NULL);

    /* 4096-byte segments: about 20 frames cross several of them */
    rc = 0;
    for (i = 6; i <= 40; i++) {
        rc |= append_flat(j, i, 300, 1, &seq);
    }

    rc |= caud_journal_flush(j);
    check(rc == 0 && caud_journal_written_seq(j) == 40, "batch",
          "a batch across segment ends", caud_journal_error(j));

    caud_journal_close(j, NULL, 0);

    scan(dir, 5, 1, &s);
    check(s.rc == 0 && s.count == 40 && s.last == 40, "batch",
          "chain intact across batches and segments", s.err);

    /* a flush that fails part-way loses the whole batch */
    o.segment_size = 1024 * 1024;
    snprintf(dir, sizeof(dir), "%s/batch-err", base);
    mkdir(dir, 0700);

    if (caud_journal_open(dir, 5, &o, &j, err, sizeof(err)) != 0
        || append_flat(j, 1, 100, 0, &seq) != 0)
    {
        check(0, "batch", "setup", err);
        return;
    }

    frame_at(dir, 5, 1, &off, &flen, file, sizeof(file));

    rc = 0;
    for (i = 2; i <= 6; i++) {
        rc |= append_flat(j, i, 100, 1, &seq);
    }

    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = off + flen + 300;
    setrlimit(RLIMIT_FSIZE, &lim);

    check(rc == 0, "batch", "a batch of five", caud_journal_error(j));

    rc = caud_journal_flush(j);
    e = errno;
    setrlimit(RLIMIT_FSIZE, &old);

    check(rc != 0 && e == EFBIG && stat(file, &st) == 0
          && (uint64_t) st.st_size == off + flen
          && caud_journal_written_seq(j) == 1
          && caud_journal_last_seq(j) == 1, "batch",
          "a failed flush is cut off, its seqs taken back",
          caud_journal_error(j));

    check(append_flat(j, 2, 100, 1, &seq) == 0 && seq == 2
          && caud_journal_flush(j) == 0
          && caud_journal_written_seq(j) == 2, "batch",
          "the next batch reuses the seqs", caud_journal_error(j));

    caud_journal_close(j, NULL, 0);

    scan(dir, 5, 1, &s);
    check(s.rc == 0 && s.count == 2, "batch", "chain intact after a failed "
          "flush", s.err);

    test_batch_full(base);
}


typedef struct {
    caud_journal_t   *j;
    atomic_int        done;
    int               syncs;
    int               errors;
    int               regressions;
    int               waits;
    char              err[512];
} gc_t;


static void *
gc_syncer(void *arg)
{
    gc_t      *g = arg;
    uint64_t   d, prev;

    prev = 0;

    while (!atomic_load(&g->done)) {
        if (caud_journal_sync(g->j, g->err, sizeof(g->err)) != 0) {
            g->errors++;
            break;
        }

        g->syncs++;
        d = caud_journal_durable_seq(g->j);
        if (d < prev) {
            g->regressions++;
        }
        prev = d;
    }

    return NULL;
}


static void
test_group_commit(const char *base)
{
    int                   rc, i;
    char                  dir[512], err[512];
    gc_t                  g;
    pthread_t             t;
    uint64_t              seq, bad;
    caud_journal_opts_t   o = { 64 * 1024, 0, 0 };
    scan_t                s;

    snprintf(dir, sizeof(dir), "%s/gc", base);
    mkdir(dir, 0700);

    memset(&g, 0, sizeof(g));

    if (caud_journal_open(dir, 0, &o, &g.j, err, sizeof(err)) != 0) {
        check(0, "group commit", "open", err);
        return;
    }

    pthread_create(&t, NULL, gc_syncer, &g);

    /* durable_seq must never pass what was written when it was read */
    bad = 0;
    rc = 0;
    for (i = 1; i <= 20000 && rc == 0; i++) {
        /*
         * EAGAIN is the designed backpressure (16 rotated segments await
         * a sync): on a loaded machine the syncer can fall that far
         * behind 64 KiB segments, and a writer then waits, as here
         */
        while ((rc = append_n(g.j, i, 1, 200)) != 0 && errno == EAGAIN) {
            g.waits++;
            usleep(200);
        }

        seq = caud_journal_last_seq(g.j);
        if (caud_journal_durable_seq(g.j) > seq) {
            bad++;
        }
    }

    atomic_store(&g.done, 1);
    pthread_join(t, NULL);

    check(rc == 0 && g.errors == 0 && bad == 0 && g.regressions == 0,
          "group commit", "appends and syncs in two threads, with rotation",
          g.errors ? g.err : caud_journal_error(g.j));

    check(caud_journal_sync(g.j, err, sizeof(err)) == 0
          && caud_journal_durable_seq(g.j) == 20000, "group commit",
          "a last sync covers everything", err);

    printf("  group commit: 20000 appends, %d syncs, %d backpressure "
           "waits\n", g.syncs, g.waits);

    caud_journal_close(g.j, NULL, 0);

    scan(dir, 0, 1, &s);
    check(s.rc == 0 && s.count == 20000, "group commit", "chain intact",
          s.err);
}


/*
 * Records longer than the reader's 64 KiB read buffer (a long message
 * body, and the whole stanza beside it) among short ones: the reader
 * grows its buffer for them and keeps reading across its refills.
 */
static void
test_large_frames(const char *base)
{
    int              rc, i, n, ok;
    char             dir[512], err[512], id[32], *body;
    size_t           len[40];
    json_t          *rec, *d;
    uint8_t          prev[CAUD_HASH_LEN];
    uint64_t         seq;
    caud_frame_t     f;
    caud_reader_t   *r;
    caud_journal_t  *j;
    const char      *got;

    static const size_t  big[] = {
        200 * 1024, 65 * 1024, 64 * 1024, 100 * 1024
    };

    snprintf(dir, sizeof(dir), "%s/large", base);
    mkdir(dir, 0700);

    body = malloc(200 * 1024 + 1);
    rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
    check(rc == 0 && body != NULL, "large frames", "open", err);
    if (rc != 0 || body == NULL) {
        free(body);
        return;
    }

    /* 40 records: every tenth long, the rest 1 KiB */
    ok = 1;

    for (i = 0; i < 40; i++) {
        len[i] = (i % 10 == 3) ? big[i / 10] : 1024;
        memset(body, 'a' + i % 26, len[i]);
        snprintf(id, sizeof(id), "m-%d", i);

        rec = caud_record_new("message", CAUD_SUCCESS, 1700000000000000 + i);
        ok = ok && rec != NULL
             && caud_record_set_object(rec, "chat", id) == 0
             && caud_record_set_param_str(rec, "body", body, len[i]) == 0
             && caud_journal_append(j, rec, &seq) == 0
             && seq == (uint64_t) i + 1;
        json_decref(rec);
    }

    check(ok && caud_journal_sync(j, err, sizeof(err)) == 0
          && caud_journal_close(j, err, sizeof(err)) == 0, "large frames",
          "40 appends, 4 of them 64 to 200 KiB", err);

    rc = caud_reader_open(dir, 0, 1, &r, err, sizeof(err));
    check(rc == 0, "large frames", "reader open", err);
    if (rc != 0) {
        free(body);
        return;
    }

    memset(prev, 0, sizeof(prev));
    n = 0;

    while ((rc = caud_reader_next(r, &f)) == 1 && n < 40) {
        d = caud_record_decode(f.payload, f.len, err, sizeof(err));
        got = json_string_value(json_object_get(
                  json_object_get(d, "params"), "body"));

        ok = ok && d != NULL && f.seq == (uint64_t) n + 1
             && memcmp(f.prev_hash, prev, CAUD_HASH_LEN) == 0
             && got != NULL && strlen(got) == len[n]
             && got[0] == 'a' + n % 26 && got[len[n] - 1] == 'a' + n % 26;

        memcpy(prev, f.entry_hash, CAUD_HASH_LEN);
        json_decref(d);
        n++;
    }

    check(rc == 0 && n == 40 && ok, "large frames",
          "the reader returns each record whole, chained, in order",
          caud_reader_error(r));

    caud_reader_close(r);
    free(body);
}


int
main(void)
{
    char  base[256];

    if (mkdir_tmp(base, sizeof(base), "caud-test") == NULL) {
        printf("mkdtemp failed\n0 passed, 1 failed\n");
        return 1;
    }

    test_record_canonical();
    test_record_unicode();
    test_record_refuse();
    test_record_jansson();
    test_entry_hash();

    test_roundtrip(base);
    test_large_frames(base);
    test_resume(base);
    test_lock(base);
    test_rotation(base);
    test_prealloc(base);
    test_backpressure(base);
    test_torn(base);
    test_bitflip(base);
    test_tamper(base);
    test_segments(base);
    test_write_error(base);
    test_batch(base);
    test_group_commit(base);

    rmtree(base);

    return unit_report();
}
