
/*
 * Unit tests for caud_flat_encode() and caud_journal_append_flat()
 * (audit/src/caud_record.c, caud_journal.c): a flat record must give
 * the very bytes the jansson path gives (caud_record_new(), the setters
 * and caud_record_encode()) for the same content, refuse what that path
 * refuses (invalid UTF-8), and chain in the journal like any record.
 */


#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caud.h"
#include "unit.h"


/* the same record through jansson, "seq" set as the journal sets it */
static int
jansson_bytes(const caud_flat_t *r, uint64_t seq, caud_buf_t *b)
{
    int      rc;
    char    *id;
    size_t   i;
    json_t  *rec;

    rec = caud_record_new(r->event, r->status, r->ts_utc_us);
    if (rec == NULL || caud_record_set_actor(rec, &r->actor) != 0) {
        json_decref(rec);
        return -1;
    }

    rc = 0;

    if (r->object_type) {
        id = r->object_id ? strndup(r->object_id, r->object_id_len) : NULL;
        rc |= caud_record_set_object(rec, r->object_type, id);
        free(id);
    }

    if (r->error_code || r->error_description) {
        rc |= caud_record_set_error(rec, r->error_code,
                                    r->error_description);
    }

    for (i = 0; i < r->nparams; i++) {
        rc |= caud_record_set_param_str(rec, r->params[i].key,
                                        r->params[i].s, r->params[i].len);
    }

    rc |= json_object_set_new(rec, "seq", json_integer(seq));

    if (rc == 0) {
        rc = caud_record_encode(rec, b);
    }

    json_decref(rec);

    return rc;
}


static void
same(const char *name, const caud_flat_t *r, uint64_t seq)
{
    int         a, b;
    char        detail[512];
    caud_buf_t  x = { 0 }, y = { 0 };

    a = jansson_bytes(r, seq, &x);
    b = caud_flat_encode(r, seq, &y);

    snprintf(detail, sizeof(detail), "jansson %d \"%.*s\"\n  flat %d \"%.*s\"",
             a, (int) (x.len < 200 ? x.len : 200), x.data ? (char *) x.data
             : "", b, (int) (y.len < 200 ? y.len : 200),
             y.data ? (char *) y.data : "");

    check(a == 0 && b == 0 && x.len == y.len
          && memcmp(x.data, y.data, x.len) == 0, "flat", name, detail);

    caud_buf_free(&x);
    caud_buf_free(&y);
}


static void
refused(const char *name, const caud_flat_t *r)
{
    caud_buf_t  x = { 0 }, y = { 0 };

    check(jansson_bytes(r, 1, &x) != 0 && caud_flat_encode(r, 1, &y) != 0
          && y.len == 0, "flat", name, NULL);

    caud_buf_free(&x);
    caud_buf_free(&y);
}


static const char  stanza[] =
    "<message xmlns='jabber:client' to='bob@example.com/r' type='chat'"
    " id='m1'><body>a \"quoted\" \\ back\nslash\t\x01 \xf0\x9f\x98\x80"
    " &amp; &lt;</body></message>";


static void
test_bytes(void)
{
    caud_flat_t  r;
    static const char  body[] = "a \"quoted\" \\ back\nslash\t\x01 "
                                "\xf0\x9f\x98\x80 \xe2\x80\xa8 \x7f/ \0NUL";

    /* a message record as ngx_xmpp_audit_message() writes it */
    memset(&r, 0, sizeof(r));
    r.event = "message";
    r.status = CAUD_SUCCESS;
    r.ts_utc_us = 1764200000123456;
    r.actor.user = "alice@example.com";
    r.actor.session_id = "f00dfeed";
    r.actor.ip = "127.0.0.9";
    r.actor.transport = "tcp";
    r.actor.client = "lg";
    r.object_type = "jid";
    r.object_id = "bob@example.com/r";
    r.object_id_len = strlen(r.object_id);
    r.params[0] = (caud_flat_param_t) { "to", "bob@example.com/r", 17 };
    r.params[1] = (caud_flat_param_t) { "from", "alice@example.com/lg", 20 };
    r.params[2] = (caud_flat_param_t) { "type", "chat", 4 };
    r.params[3] = (caud_flat_param_t) { "id", "m1", 2 };
    r.params[4] = (caud_flat_param_t) { "body", body, sizeof(body) - 1 };
    r.params[5] = (caud_flat_param_t) { "stanza", stanza,
                                        sizeof(stanza) - 1 };
    r.nparams = 6;

    same("message record, escapes, emoji, U+2028, DEL, NUL", &r, 42);
    same("large seq", &r, 18446744073709551615ULL >> 1);

    /* keys that are prefixes of others, in reverse order */
    r.params[6] = (caud_flat_param_t) { "i", "x", 1 };
    r.params[7] = (caud_flat_param_t) { "b", "", 0 };
    r.nparams = 8;
    same("param keys sorted bytewise, prefixes first", &r, 7);

    /* a failed sign-in: error, no object, no params, partial actor */
    memset(&r, 0, sizeof(r));
    r.event = "signin";
    r.status = CAUD_FAIL;
    r.ts_utc_us = 1700000000000000;
    r.actor.user = "alice@example.com";
    r.actor.ip = "192.0.2.1";
    r.actor.transport = "websocket";
    r.error_code = "not-authorized";
    r.error_description = "invalid credentials";
    same("failed sign-in with an error", &r, 1);

    r.error_description = NULL;
    same("error with a code only", &r, 2);

    /* a session end: one param, an actor with nothing in it */
    memset(&r, 0, sizeof(r));
    r.event = "session_end";
    r.status = CAUD_ATTEMPT;
    r.ts_utc_us = -5;
    r.params[0] = (caud_flat_param_t) { "reason", "connection-lost", 15 };
    r.nparams = 1;
    same("empty actor, negative time, attempt", &r, 3);

    r.object_type = "jid";
    same("object without an id", &r, 4);
}


/*
 * The string encoder copies plain bytes a word at a time: strings of
 * every length up to 70 with the bytes that need escaping at every
 * offset, against jansson's own dump (JSON_COMPACT | JSON_SORT_KEYS is
 * the canonical form, caud.h).
 */
static void
test_strings(void)
{
    int          i, k, t, bad, ntok;
    char        *dump, str[512];
    size_t       len;
    json_t      *o;
    caud_buf_t   x = { 0 };
    static const char  *tok[] = {
        "a", "Z", " ", "\"", "\\", "\n", "\t", "\x01", "\x1f", "\x7f",
        "/", "\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "'", "<",
        "\b", "\f", "\r", "\x0b",
    };

    srand(4);
    bad = 0;
    ntok = (int) (sizeof(tok) / sizeof(tok[0]));

    for (i = 0; i < 5000 && !bad; i++) {
        len = 0;
        k = rand() % 71;

        while (k-- > 0) {
            /* mostly plain bytes, as in a stanza */
            t = (rand() % 3) ? rand() % 2 : rand() % ntok;
            memcpy(str + len, tok[t], strlen(tok[t]));
            len += strlen(tok[t]);
        }

        o = json_object();
        json_object_set_new(o, "s", json_stringn(str, len));
        dump = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);

        x.len = 0;
        bad = caud_record_encode(o, &x) != 0 || dump == NULL
              || x.len != strlen(dump) || memcmp(x.data, dump, x.len) != 0;

        free(dump);
        json_decref(o);
    }

    check(!bad, "flat", "5,000 strings encoded as jansson dumps them", NULL);
    caud_buf_free(&x);
}


static void
test_refused(void)
{
    size_t       i;
    caud_flat_t  r;
    static const char  *bad[] = {
        "\xc0\xaf",                 /* overlong '/' */
        "\xe0\x80\xaf",             /* overlong, 3 bytes */
        "\xed\xa0\x80",             /* a surrogate */
        "\xf4\x90\x80\x80",         /* above U+10FFFF */
        "\xf8\x88\x80\x80\x80",     /* 5 bytes */
        "abc\xe2\x82",              /* cut short */
        "\x80",                     /* a lone continuation */
        "\xff",
    };

    memset(&r, 0, sizeof(r));
    r.event = "message";
    r.status = CAUD_SUCCESS;
    r.nparams = 1;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r.params[0] = (caud_flat_param_t) { "body", bad[i], strlen(bad[i]) };
        refused("invalid UTF-8 in a param", &r);
    }

    r.nparams = 0;
    r.actor.user = "\xc3";
    refused("invalid UTF-8 in the actor", &r);

    r.actor.user = NULL;
    r.event = "";
    refused("empty event", &r);
}


static void
test_journal(void)
{
    int              rc;
    char             dir[] = "/tmp/caud-flat-XXXXXX", err[512];
    uint64_t         seq, i;
    caud_frame_t     f;
    caud_flat_t      r;
    caud_buf_t       x = { 0 };
    caud_reader_t   *rd;
    caud_journal_t  *j;

    if (mkdtemp(dir) == NULL) {
        check(0, "flat", "journal: temp dir", NULL);
        return;
    }

    rc = caud_journal_open(dir, 0, NULL, &j, err, sizeof(err));
    check(rc == 0, "flat", "journal: open", err);
    if (rc != 0) {
        return;
    }

    memset(&r, 0, sizeof(r));
    r.event = "message";
    r.status = CAUD_SUCCESS;
    r.params[0] = (caud_flat_param_t) { "body", "hello", 5 };
    r.nparams = 1;

    for (i = 1; i <= 5; i++) {
        r.ts_utc_us = (int64_t) i;
        check(caud_journal_append_flat(j, &r, &seq) == 0 && seq == i, "flat",
              "journal: append", caud_journal_error(j));
    }

    r.params[0].s = "\xc0\xaf";
    r.params[0].len = 2;
    check(caud_journal_append_flat(j, &r, &seq) != 0
          && caud_journal_last_seq(j) == 5, "flat", "journal: a refused record "
          "takes no seq", NULL);

    r.params[0] = (caud_flat_param_t) { "body", "hello", 5 };
    r.ts_utc_us = 6;
    check(caud_journal_append_flat(j, &r, &seq) == 0 && seq == 6, "flat",
          "journal: appends after a refusal", caud_journal_error(j));

    check(caud_journal_close(j, err, sizeof(err)) == 0, "flat",
          "journal: close", err);

    /* the chain verifies from the genesis, and the stored bytes are the
     * jansson path's */
    rc = caud_reader_open(dir, 0, 1, &rd, err, sizeof(err));
    check(rc == 0, "flat", "journal: reader", err);

    for (i = 1; rc == 0 && caud_reader_next(rd, &f) == 1; i++) {
        r.ts_utc_us = (int64_t) i;
        x.len = 0;
        check(f.seq == i && jansson_bytes(&r, i, &x) == 0 && x.len == f.len
              && memcmp(x.data, f.payload, f.len) == 0, "flat",
              "journal: stored bytes", NULL);
    }

    check(i == 7, "flat", "journal: six records read back", NULL);

    if (rc == 0) {
        caud_reader_close(rd);
    }

    caud_buf_free(&x);

    snprintf(err, sizeof(err), "rm -rf '%s'", dir);
    if (system(err) != 0) {
        check(0, "flat", "journal: cleanup", dir);
    }
}


int
main(void)
{
    test_bytes();
    test_strings();
    test_refused();
    test_journal();

    return unit_report();
}
