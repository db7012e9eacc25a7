
/*
 * Unit tests for the pure parts of the MariaDB side of the audit
 * pipeline: caud_columns() (audit/src/caud_db.c), which copies the
 * compliance columns out of a record's canonical JSON, table-driven and
 * against jansson over random records; caud_checkpoint_parse(); and
 * conclavectl's nginx time syntax (admin/cctl_conf.c).
 */


#define _GNU_SOURCE

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caud.h"
#include "cctl.h"
#include "unit.h"


#define NUL_  ((const char *) 1)      /* expect SQL NULL */


/* ------------------------------------------------------------------ */
/* caud_columns(), table-driven */


typedef struct {
    const char  *name;
    const char  *json;
    int          rc;
    int64_t      ts;
    const char  *col[CAUD_NCOLS];     /* NULL: do not check */
} cols_case_t;


#define MSG  "{\"actor\":{\"ip\":\"192.0.2.1\",\"session_id\":\"s1\"," \
    "\"transport\":\"websocket\",\"user\":\"alice@example.com\"}," \
    "\"event\":\"message\",\"object\":{\"id\":\"bob@example.com/phone\"," \
    "\"type\":\"jid\"},\"params\":{\"body\":\"hi\",\"from\":\"a\"," \
    "\"id\":\"m-1\",\"stanza\":\"<message/>\",\"to\":\"b\",\"type\":" \
    "\"chat\"},\"seq\":7,\"status\":\"success\",\"ts_utc_us\":" \
    "1700000000000001,\"v\":1}"

#define E300  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" \
    "\xc3\xa9\xc3\xa9\xc3\xa9"                     /* 10 x U+00E9 */


static const cols_case_t  cols_cases[] = {

    { "message record", MSG, 0, 1700000000000001LL,
      { "message", "success", "alice@example.com", "bob@example.com",
        "192.0.2.1", "s1", "websocket", "chat", "m-1", "hi" } },

    { "signin failure", "{\"actor\":{\"user\":\"mallory\"},\"error\":"
      "{\"code\":\"not-authorized\",\"description\":\"x\"},\"event\":"
      "\"signin\",\"seq\":1,\"status\":\"fail\",\"ts_utc_us\":5,\"v\":1}",
      0, 5,
      { "signin", "fail", "mallory", NUL_, NUL_, NUL_, NUL_, NUL_, NUL_,
        NUL_ } },

    { "escapes", "{\"params\":{\"body\":\"a\\\"b\\\\c\\/d\\n\\t\\b\\f\\r"
      "\\u0001\\u00e9\\ud83d\\ude00\\u20ac\"},\"ts_utc_us\":1}", 0, 1,
      { NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_,
        "a\"b\\c/d\n\t\b\f\r\x01\xc3\xa9\xf0\x9f\x98\x80\xe2\x82\xac" } },

    { "bare JID", "{\"object\":{\"id\":\"room@conf.example/nick/x\"}}", 0,
      0, { NULL, NULL, NULL, "room@conf.example" } },

    { "id without resource", "{\"object\":{\"id\":\"example.com\"}}", 0, 0,
      { NULL, NULL, NULL, "example.com" } },

    { "empty id before '/'", "{\"object\":{\"id\":\"/r\"}}", 0, 0,
      { NULL, NULL, NULL, "" } },

    { "not strings", "{\"actor\":{\"user\":42,\"ip\":null},\"event\":true,"
      "\"params\":{\"body\":{\"text\":\"x\"},\"type\":[\"chat\"]},"
      "\"object\":\"bob\",\"ts_utc_us\":3}", 0, 3,
      { NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_ } },

    { "event cut at 32", "{\"event\":\"0123456789012345678901234567890123"
      "456789\"}", 0, 0, { "01234567890123456789012345678901" } },

    { "status cut in characters", "{\"status\":\"" E300 "\"}", 0, 0,
      { NULL, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
              "\xc3\xa9" } },

    { "invalid UTF-8 is NULL, the rest stays",
      "{\"event\":\"ok\",\"params\":{\"body\":\"\xc3\x28\"},\"status\":"
      "\"\xed\xa0\x80\",\"actor\":{\"user\":\"\xf8\x88\x80\x80\x80\"}}",
      0, 0, { "ok", NUL_, NUL_, NULL, NULL, NULL, NULL, NULL, NULL,
              NUL_ } },

    { "overlong UTF-8 is NULL", "{\"event\":\"\xc0\xaf\"}", 0, 0,
      { NUL_ } },

    { "lone surrogate is NULL", "{\"event\":\"\\ud800x\",\"status\":"
      "\"\\udc00\"}", 0, 0, { NUL_, NUL_ } },

    { "bad escape is NULL", "{\"event\":\"\\x\",\"status\":\"ok\"}", 0, 0,
      { NUL_, "ok" } },

    { "unknown members skipped", "{\"a\":[1,{\"b\":\"}]\\\"\"},[]],"
      "\"actor\":{\"client\":{\"x\":[{}]},\"user\":\"u\"},\"meta\":{},"
      "\"object\":{},\"params\":{\"stanza\":\"{\\\"id\\\":1}\"},\"z\":-1,"
      "\"ts_utc_us\":-12}", 0, -12,
      { NUL_, NUL_, "u", NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_ } },

    { "whitespace", " { \"event\" : \"e\" , \"actor\" : { \"user\" : \"u\" "
      "} , \"ts_utc_us\" : 9 } \n", 0, 9, { "e", NULL, "u" } },

    { "escaped key is not ours", "{\"\\u0065vent\":\"e\"}", 0, 0,
      { NUL_ } },

    { "duplicate key: the last", "{\"event\":\"a\",\"event\":\"b\"}", 0, 0,
      { "b" } },

    { "ts out of range", "{\"ts_utc_us\":99999999999999999999,\"event\":"
      "\"e\"}", 0, 0, { "e" } },

    { "ts real", "{\"ts_utc_us\":1.5,\"event\":\"e\"}", 0, 0, { "e" } },

    { "not JSON", "hello", 1, 0,
      { NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_, NUL_ } },

    { "an array", "[1,2]", 1, 0, { NUL_ } },

    { "truncated", "{\"event\":\"message\",\"actor\":{\"user\":\"a\"", 1,
      0, { NUL_, NUL_, NUL_ } },

    { "trailing bytes", "{\"event\":\"e\"}x", 1, 0, { NUL_ } },

    { "unterminated string", "{\"event\":\"e", 1, 0, { NUL_ } },

    { "empty", "", 1, 0, { NUL_ } },
};


static void
test_columns_table(void)
{
    int              rc, ok;
    size_t           i, k, n;
    char             detail[256];
    caud_buf_t       b;
    caud_columns_t   c;
    const char      *want, *s;

    memset(&b, 0, sizeof(b));

    for (i = 0; i < sizeof(cols_cases) / sizeof(cols_cases[0]); i++) {
        const cols_case_t  *t = &cols_cases[i];

        b.len = 0;
        rc = caud_columns(t->json, strlen(t->json), &c, &b);

        snprintf(detail, sizeof(detail), "rc %d, ts %" PRId64, rc,
                 c.ts_utc_us);
        check(rc == t->rc && c.ts_utc_us == t->ts, "columns", t->name,
              detail);

        for (k = 0; k < CAUD_NCOLS; k++) {
            want = t->col[k];
            if (want == NULL) {
                continue;
            }

            if (want == NUL_) {
                ok = c.null[k];
            } else {
                n = strlen(want);
                ok = !c.null[k] && c.len[k] == n
                     && memcmp(b.data + c.off[k], want, n) == 0;
            }

            snprintf(detail, sizeof(detail), "column %s: %s%.*s",
                     caud_column_name[k], c.null[k] ? "NULL" : "",
                     c.null[k] ? 0 : (int) c.len[k],
                     c.null[k] ? "" : (char *) b.data + c.off[k]);
            check(ok, "columns", t->name, detail);
        }
    }

    /* a NUL inside a value is kept: the columns are counted strings */
    b.len = 0;
    s = "{\"params\":{\"body\":\"a\\u0000b\"}}";
    rc = caud_columns(s, strlen(s), &c, &b);
    check(rc == 0 && c.len[CAUD_COL_BODY] == 3
          && memcmp(b.data + c.off[CAUD_COL_BODY], "a\0b", 3) == 0,
          "columns", "NUL in the body", NULL);

    /* the width counts characters: 255 four-byte ones fit actor_user */
    {
        static char  j[4096];
        char        *p;

        p = j + sprintf(j, "{\"actor\":{\"user\":\"");
        for (k = 0; k < 300; k++) {
            p += sprintf(p, "\xf0\x9f\x98\x80");
        }
        sprintf(p, "\"}}");

        b.len = 0;
        rc = caud_columns(j, strlen(j), &c, &b);
        check(rc == 0 && c.len[CAUD_COL_ACTOR_USER] == 255 * 4, "columns",
              "255 emoji", NULL);
    }

    caud_buf_free(&b);
}


/* ------------------------------------------------------------------ */
/* caud_columns() against jansson, over random records */


static uint32_t  rnd_state = 2463534242u;


static uint32_t
rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 17;
    rnd_state ^= rnd_state << 5;
    return rnd_state;
}


/* a random valid UTF-8 string of up to max code points */
static size_t
rnd_string(char *buf, size_t max)
{
    size_t    n, i;
    uint32_t  c, r;
    char     *p;

    n = rnd() % (max + 1);
    p = buf;

    for (i = 0; i < n; i++) {
        r = rnd() % 10;
        c = r < 4 ? 0x20 + rnd() % 0x5f               /* ASCII */
            : r < 5 ? rnd() % 0x20                    /* controls */
            : r < 6 ? (rnd() & 1 ? '"' : '\\')
            : r < 7 ? '/'
            : r < 8 ? 0x80 + rnd() % 0x780            /* 2 bytes */
            : r < 9 ? 0x800 + rnd() % 0xF800          /* 3 bytes */
            : 0x10000 + rnd() % 0x100000;             /* 4 bytes */

        if (c >= 0xD800 && c <= 0xDFFF) {
            c = 'x';
        }

        if (c < 0x80) {
            *p++ = (char) c;
        } else if (c < 0x800) {
            *p++ = (char) (0xC0 | c >> 6);
            *p++ = (char) (0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *p++ = (char) (0xE0 | c >> 12);
            *p++ = (char) (0x80 | ((c >> 6) & 0x3F));
            *p++ = (char) (0x80 | (c & 0x3F));
        } else {
            *p++ = (char) (0xF0 | c >> 18);
            *p++ = (char) (0x80 | ((c >> 12) & 0x3F));
            *p++ = (char) (0x80 | ((c >> 6) & 0x3F));
            *p++ = (char) (0x80 | (c & 0x3F));
        }
    }

    return p - buf;
}


/* bytes of the first max characters of valid UTF-8 s */
static size_t
utf8_prefix(const char *s, size_t len, size_t max)
{
    size_t  i, chars;

    for (i = 0, chars = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xC0) != 0x80 && chars++ == max) {
            return i;
        }
    }

    return len;
}


/* the column as jansson sees the record: NULL when not a string */
static const char *
jansson_col(json_t *rec, int col, size_t *len)
{
    json_t       *v;
    const char   *s, *slash;
    static const char  *path[CAUD_NCOLS][2] = {
        { NULL, "event" }, { NULL, "status" }, { "actor", "user" },
        { "object", "id" }, { "actor", "ip" }, { "actor", "session_id" },
        { "actor", "transport" }, { "params", "type" }, { "params", "id" },
        { "params", "body" }
    };

    v = path[col][0] ? json_object_get(rec, path[col][0]) : rec;
    v = json_object_get(v, path[col][1]);
    if (!json_is_string(v)) {
        return NULL;
    }

    s = json_string_value(v);
    *len = json_string_length(v);

    if (col == CAUD_COL_PEER && (slash = memchr(s, '/', *len)) != NULL) {
        *len = slash - s;
    }

    *len = utf8_prefix(s, *len, caud_column_width[col]);

    return s;
}


static json_t *
rnd_record(char *buf)
{
    size_t         n;
    json_t        *rec;
    caud_actor_t   a;

    memset(&a, 0, sizeof(a));
    rec = caud_record_new(rnd() % 3 ? "message" : "signin", rnd() % 3,
                          (int64_t) rnd() * 1000);

    n = rnd_string(buf, 300);
    buf[n] = '\0';
    a.user = rnd() % 4 ? strdup(buf) : NULL;
    a.ip = rnd() % 4 ? "2001:db8::1" : NULL;
    a.transport = "websocket";
    caud_record_set_actor(rec, &a);
    free((char *) a.user);

    if (rnd() % 4) {
        n = rnd_string(buf, 300);
        caud_record_set_object(rec, "jid", NULL);
        caud_record_set_param_str(rec, "id", buf, n);
        json_object_set_new(json_object_get(rec, "object"), "id",
                            json_stringn(buf, n));
    }

    if (rnd() % 4) {
        n = rnd_string(buf, 2000);
        caud_record_set_param_str(rec, "body", buf, n);
        n = rnd_string(buf, 20);
        caud_record_set_param_str(rec, "type", buf, n);
    }

    return rec;
}


static void
test_columns_random(void)
{
    int              i, k, bad;
    char            *buf, detail[128];
    size_t           len;
    json_t          *rec, *back;
    caud_buf_t       enc, b;
    const char      *s;
    caud_columns_t   c;

    buf = malloc(16384);
    memset(&b, 0, sizeof(b));
    bad = 0;

    for (i = 0; i < 3000 && buf; i++) {
        rec = rnd_record(buf);
        memset(&enc, 0, sizeof(enc));

        if (rec == NULL || caud_record_encode(rec, &enc) != 0) {
            bad++;
            json_decref(rec);
            continue;
        }

        back = json_loadb((char *) enc.data, enc.len, JSON_ALLOW_NUL, NULL);
        b.len = 0;

        if (back == NULL || caud_columns(enc.data, enc.len, &c, &b) != 0
            || c.ts_utc_us != json_integer_value(json_object_get(back,
                                                          "ts_utc_us")))
        {
            bad++;
        }

        for (k = 0; back && k < CAUD_NCOLS; k++) {
            s = jansson_col(back, k, &len);
            if (s == NULL ? !c.null[k]
                : (c.null[k] || c.len[k] != len
                   || memcmp(b.data + c.off[k], s, len) != 0))
            {
                if (bad++ < 5) {
                    snprintf(detail, sizeof(detail), "record %d column %s",
                             i, caud_column_name[k]);
                    check(0, "columns", "random vs jansson", detail);
                }
            }
        }

        json_decref(back);
        json_decref(rec);
        caud_buf_free(&enc);
    }

    check(buf != NULL && bad == 0, "columns", "3000 random records", NULL);

    caud_buf_free(&b);
    free(buf);
}


/* ------------------------------------------------------------------ */
/* caud_checkpoint_parse() */


static void
test_checkpoint_parse(void)
{
    int                 rc;
    char                dir[] = "/tmp/audit_ship_test.XXXXXX", path[300];
    char                note[CAUD_NOTE_MAX], err[256];
    size_t              len;
    caud_signer_t      *s;
    caud_checkpoint_t   cp, got;

    if (mkdtemp(dir) == NULL) {
        check(0, "checkpoint", "mkdtemp", NULL);
        return;
    }

    snprintf(path, sizeof(path), "%s/k.pem", dir);

    s = NULL;
    if (caud_key_generate(path, err, sizeof(err)) != 0
        || (s = caud_signer_load(path, "example.com/audit/n", err,
                                 sizeof(err))) == NULL)
    {
        check(0, "checkpoint", "key", err);
        goto done;
    }

    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "example.com/audit/n/3");
    cp.size = 123456789;
    memset(cp.root, 0xA5, sizeof(cp.root));

    rc = caud_checkpoint_sign(s, &cp, note, sizeof(note), &len);
    check(rc == 0, "checkpoint", "sign", NULL);

    rc = caud_checkpoint_parse(note, len, &got, err, sizeof(err));
    check(rc == 0 && strcmp(got.origin, cp.origin) == 0
          && got.size == cp.size
          && memcmp(got.root, cp.root, CAUD_HASH_LEN) == 0,
          "checkpoint", "parse a signed note", err);

    /* parse only: a changed signature still parses, verify refuses it */
    note[len - 3] ^= 1;
    rc = caud_checkpoint_parse(note, len, &got, err, sizeof(err));
    check(rc == 0 && got.size == cp.size, "checkpoint",
          "signature not checked", err);

    check(caud_checkpoint_parse(note, len - 1, &got, err, sizeof(err))
          == -1, "checkpoint", "no final newline", NULL);
    check(caud_checkpoint_parse("a\n1\nAAAA\n", 9, &got, err, sizeof(err))
          == -1, "checkpoint", "no signature block", NULL);
    check(caud_checkpoint_parse("a\nx\nAAAA\n\nsig\n", 14, &got, err,
                                sizeof(err)) == -1,
          "checkpoint", "bad size line", NULL);

done:

    caud_signer_free(s);
    unlink(path);
    rmdir(dir);
}


/* ------------------------------------------------------------------ */
/* conclavectl: nginx times */


static void
test_msec(void)
{
    size_t    i;
    uint64_t  ms;
    char      detail[64];
    static const struct {
        const char  *s;
        int          rc;
        uint64_t     ms;
    } t[] = {
        { "1s", 0, 1000 }, { "500ms", 0, 500 }, { "15m", 0, 900000 },
        { "1h30m", 0, 5400000 }, { "1h 30m", 0, 5400000 },
        { "2d", 0, 172800000 }, { "1w", 0, 604800000 }, { "100", 0, 100 },
        { "1m1s5ms", 0, 61005 }, { "0", 0, 0 },
        { "1m1h", -1, 0 }, { "1s1s", -1, 0 }, { "", -1, 0 },
        { "5x", -1, 0 }, { "s", -1, 0 }, { "-1s", -1, 0 },
        { "99999999999999999999d", -1, 0 },
    };

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ms = 0;
        snprintf(detail, sizeof(detail), "\"%s\"", t[i].s);
        check(cctl_parse_msec(t[i].s, &ms) == t[i].rc
              && (t[i].rc != 0 || ms == t[i].ms), "msec", detail, NULL);
    }
}


int
main(void)
{
    test_columns_table();
    test_columns_random();
    test_checkpoint_parse();
    test_msec();

    return unit_report();
}
