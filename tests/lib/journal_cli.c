
/*
 * journal_cli: writes audit journals for tests and benchmarks, the way
 * the module will (caud_journal_append() + caud_journal_sync()).
 *
 *   journal_cli DIR WRITER_ID COUNT [options]
 *
 *   --event E        message (default), signin or session_end
 *   --status S       success (default), fail or attempt
 *   --body TEXT      message body (UTF-8); default "hello <seq>"
 *   --body-file F    the body is the bytes of F
 *   --user JID       actor.user (default alice@example.com)
 *   --users K        actor.user cycles through user<i>@example.com
 *   --peer JID       object.id and params.to (default
 *                    bob@example.com/laptop)
 *   --size N         pad the body so each record is about N bytes
 *   --ts US          ts_utc_us of every record (default: now)
 *   --ts-step US     with --ts: record i gets ts + i * US
 *   --msg-type T     params.type (default chat); groupchat makes a room
 *                    message: object {"type":"room","id":PEER}
 *   --stanza-id ID   params.id (default m-<seq>)
 *   --extra XML      appended inside the <message/> of params.stanza
 *                    (an XEP-0308 <replace/>, an XEP-0424 <retract/>)
 *   --param K=V      params.K = "V" besides the others (the module's
 *                    replace_id / retract_id, docs/history.md)
 *   --event muc_create|muc_join|muc_leave
 *                    the MUC's membership records: actor.user joins or
 *                    leaves room PEER (docs/audit.md "Group chat
 *                    records"); --event muc_message with --msg-type
 *                    groupchat is a room message
 *   --segment-size N rotate segments before N bytes (default 64 MiB)
 *   --checkpoint KEY PREFIX
 *                    then sign a checkpoint of the last record with the
 *                    key file KEY, origin "PREFIX/WRITER_ID", and store
 *                    it beside the journal
 *
 * Prints "last_seq <n> head <hex entry_hash>"; exits 0, or 1 with the
 * error on stderr.  COUNT may be 0 (just open, e.g. to sign).
 *
 *   cc -Iaudit/src -o journal_cli tests/lib/journal_cli.c \
 *       audit/src/caud_record.c audit/src/caud_journal.c \
 *       audit/src/caud_journal_read.c audit/src/caud_journal_dir.c \
 *       audit/src/caud_checkpoint.c \
 *       -lcrypto -ljansson -lpthread
 */


#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caud.h"


typedef struct {
    const char     *dir;
    uint32_t        writer_id;
    uint64_t        count;
    const char     *event;
    caud_status_e   status;
    char           *body;
    size_t          body_len;
    const char     *user;
    unsigned        users;
    const char     *peer;
    size_t          size;
    int64_t         ts;
    int64_t         ts_step;
    size_t          segment_size;
    const char     *key;
    const char     *prefix;
    const char     *msg_type;
    const char     *stanza_id;
    const char     *extra;
    const char     *param;
} jcli_opts_t;


static int
jcli_read_file(const char *path, char **data, size_t *len)
{
    FILE    *fp;
    long     n;
    char    *p;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        return -1;
    }

    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0
        || fseek(fp, 0, SEEK_SET) != 0)
    {
        fclose(fp);
        return -1;
    }

    p = malloc(n + 1);
    if (p == NULL || fread(p, 1, n, fp) != (size_t) n) {
        free(p);
        fclose(fp);
        return -1;
    }

    fclose(fp);
    p[n] = '\0';
    *data = p;
    *len = n;

    return 0;
}


static int
jcli_args(int argc, char **argv, jcli_opts_t *o)
{
    int  i;

    if (argc < 4) {
        return -1;
    }

    memset(o, 0, sizeof(jcli_opts_t));
    o->dir = argv[1];
    o->writer_id = strtoul(argv[2], NULL, 10);
    o->count = strtoull(argv[3], NULL, 10);
    o->event = "message";
    o->status = CAUD_SUCCESS;
    o->user = "alice@example.com";
    o->peer = "bob@example.com/laptop";

    for (i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--checkpoint") == 0 && i + 2 < argc) {
            o->key = argv[++i];
            o->prefix = argv[++i];
            continue;
        }

        if (i + 1 >= argc) {
            return -1;
        }

        if (strcmp(argv[i], "--event") == 0) {
            o->event = argv[++i];

        } else if (strcmp(argv[i], "--status") == 0) {
            i++;
            o->status = strcmp(argv[i], "fail") == 0 ? CAUD_FAIL
                        : strcmp(argv[i], "attempt") == 0 ? CAUD_ATTEMPT
                        : CAUD_SUCCESS;

        } else if (strcmp(argv[i], "--body") == 0) {
            o->body = strdup(argv[++i]);
            o->body_len = strlen(o->body);

        } else if (strcmp(argv[i], "--body-file") == 0) {
            if (jcli_read_file(argv[++i], &o->body, &o->body_len) != 0) {
                fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
                return -1;
            }

        } else if (strcmp(argv[i], "--user") == 0) {
            o->user = argv[++i];

        } else if (strcmp(argv[i], "--users") == 0) {
            o->users = strtoul(argv[++i], NULL, 10);

        } else if (strcmp(argv[i], "--peer") == 0) {
            o->peer = argv[++i];

        } else if (strcmp(argv[i], "--size") == 0) {
            o->size = strtoul(argv[++i], NULL, 10);

        } else if (strcmp(argv[i], "--ts") == 0) {
            o->ts = strtoll(argv[++i], NULL, 10);

        } else if (strcmp(argv[i], "--ts-step") == 0) {
            o->ts_step = strtoll(argv[++i], NULL, 10);

        } else if (strcmp(argv[i], "--msg-type") == 0) {
            o->msg_type = argv[++i];

        } else if (strcmp(argv[i], "--stanza-id") == 0) {
            o->stanza_id = argv[++i];

        } else if (strcmp(argv[i], "--extra") == 0) {
            o->extra = argv[++i];

        } else if (strcmp(argv[i], "--param") == 0) {
            o->param = argv[++i];

        } else if (strcmp(argv[i], "--segment-size") == 0) {
            o->segment_size = strtoul(argv[++i], NULL, 10);

        } else {
            return -1;
        }
    }

    return 0;
}


/* the records the module writes (caud.h, docs/audit.md) */
static json_t *
jcli_record(const jcli_opts_t *o, uint64_t i, const char *body,
    size_t blen)
{
    char           user[4096], sid[32], stanza_id[64];
    char           key[64];
    json_t        *rec, *stanza;
    const char    *type, *eq;
    caud_actor_t   a;

    if (o->users) {
        snprintf(user, sizeof(user), "user%04u@example.com",
                 (unsigned) (i % o->users));
    } else {
        snprintf(user, sizeof(user), "%s", o->user);
    }

    snprintf(sid, sizeof(sid), "s%016" PRIx64, i * 2654435761u);
    snprintf(stanza_id, sizeof(stanza_id), "m-%" PRIu64, i);

    rec = caud_record_new(o->event, o->status,
                          o->ts ? o->ts + (int64_t) i * o->ts_step
                                : caud_now_us());
    if (rec == NULL) {
        return NULL;
    }

    memset(&a, 0, sizeof(a));
    a.user = user;
    a.session_id = sid;
    a.ip = "192.0.2.17";
    a.transport = "websocket";

    if (caud_record_set_actor(rec, &a) != 0) {
        goto fail;
    }

    if (strcmp(o->event, "signin") == 0) {
        if (o->status == CAUD_FAIL
            && caud_record_set_error(rec, "not-authorized",
                                     "invalid credentials") != 0)
        {
            goto fail;
        }

        return rec;
    }

    if (strcmp(o->event, "session_end") == 0) {
        if (caud_record_set_param(rec, "reason", json_string("closed"))) {
            goto fail;
        }

        return rec;
    }

    if (strcmp(o->event, "muc_join") == 0
        || strcmp(o->event, "muc_create") == 0
        || strcmp(o->event, "muc_leave") == 0)
    {
        if (caud_record_set_object(rec, "room", o->peer) != 0
            || caud_record_set_param(rec, "jid", json_string(user))
            || caud_record_set_param(rec, "nick", json_string(user)))
        {
            goto fail;
        }

        return rec;
    }

    if (o->stanza_id) {
        snprintf(stanza_id, sizeof(stanza_id), "%s", o->stanza_id);
    }

    type = o->msg_type ? o->msg_type : "chat";
    stanza = json_sprintf("<message to='%s' type='%s' id='%s'><body>"
                          "%.*s</body>%s</message>", o->peer, type,
                          stanza_id, (int) blen, body,
                          o->extra ? o->extra : "");

    if (caud_record_set_object(rec, strcmp(type, "groupchat") == 0
                                    || strncmp(o->event, "muc_", 4) == 0
                                    ? "room" : "jid", o->peer) != 0
        || caud_record_set_param(rec, "type", json_string(type)) != 0
        || caud_record_set_param(rec, "id", json_string(stanza_id)) != 0
        || caud_record_set_param_str(rec, "body", body, blen) != 0
        || caud_record_set_param(rec, "stanza", stanza) != 0
        || caud_record_set_param(rec, "to", json_string(o->peer)) != 0
        || caud_record_set_param(rec, "from", json_string(user)) != 0)
    {
        goto fail;
    }

    eq = o->param ? strchr(o->param, '=') : NULL;
    if (eq) {
        snprintf(key, sizeof(key), "%.*s", (int) (eq - o->param), o->param);
        if (caud_record_set_param(rec, key, json_string(eq + 1)) != 0) {
            goto fail;
        }
    }

    return rec;

fail:

    json_decref(rec);
    return NULL;
}


static int
jcli_checkpoint(caud_journal_t *j, const jcli_opts_t *o)
{
    char                buf[CAUD_NOTE_MAX], err[256];
    size_t              len;
    caud_signer_t      *s;
    caud_checkpoint_t   cp;

    s = caud_signer_load(o->key, o->prefix, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }

    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "%s/%" PRIu32, o->prefix,
             o->writer_id);
    cp.size = caud_journal_last_seq(j);
    memcpy(cp.root, caud_journal_head(j), CAUD_HASH_LEN);

    if (caud_checkpoint_sign(s, &cp, buf, sizeof(buf), &len) != 0
        || caud_checkpoint_store(o->dir, o->writer_id, cp.size, buf, len,
                                 err, sizeof(err)) != 0)
    {
        fprintf(stderr, "checkpoint: %s\n", err);
        caud_signer_free(s);
        return -1;
    }

    caud_signer_free(s);

    return 0;
}


int
main(int argc, char **argv)
{
    char             err[512], def[64], *body;
    size_t           blen, k;
    json_t          *rec;
    uint64_t         i, seq;
    jcli_opts_t      o;
    const uint8_t   *h;
    caud_journal_t  *j;
    caud_journal_opts_t  jo;

    if (jcli_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: journal_cli DIR WRITER_ID COUNT [options] "
                "(see the source)\n");
        return 1;
    }

    memset(&jo, 0, sizeof(jo));
    jo.segment_size = o.segment_size;

    if (caud_journal_open(o.dir, o.writer_id, &jo, &j, err, sizeof(err))
        != 0)
    {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }

    for (i = 0; i < o.count; i++) {
        body = o.body;
        blen = o.body_len;

        if (body == NULL) {
            blen = snprintf(def, sizeof(def), "hello %" PRIu64,
                            caud_journal_next_seq(j));
            body = def;
        }

        if (o.size) {
            /* the stanza holds the body again: pad both */
            k = o.size > 420 ? (o.size - 420) / 2 : 1;
            body = malloc(k + 1);
            memset(body, 'x', k);
            memcpy(body, o.body ? o.body : def, blen < k ? blen : k);
            blen = k;
        }

        rec = jcli_record(&o, caud_journal_next_seq(j), body, blen);
        if (body != o.body && body != def) {
            free(body);
        }

        if (rec == NULL || caud_journal_append(j, rec, &seq) != 0) {
            fprintf(stderr, "append: %s\n", strerror(errno));
            return 1;
        }

        json_decref(rec);

        if ((i + 1) % 4096 == 0
            && caud_journal_sync(j, err, sizeof(err)) != 0)
        {
            fprintf(stderr, "sync: %s\n", err);
            return 1;
        }
    }

    if (caud_journal_sync(j, err, sizeof(err)) != 0) {
        fprintf(stderr, "sync: %s\n", err);
        return 1;
    }

    if (o.key && caud_journal_last_seq(j) && jcli_checkpoint(j, &o) != 0) {
        return 1;
    }

    printf("last_seq %" PRIu64 " head ", caud_journal_last_seq(j));
    h = caud_journal_head(j);
    for (k = 0; k < CAUD_HASH_LEN; k++) {
        printf("%02x", h[k]);
    }
    printf("\n");

    free(o.body);

    if (caud_journal_close(j, err, sizeof(err)) != 0) {
        fprintf(stderr, "close: %s\n", err);
        return 1;
    }

    return 0;
}
