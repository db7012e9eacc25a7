
/*
 * conclavectl export, verify-export, retention and hold (docs/
 * compliance.md): argument parsing and printing around the compliance
 * engine (audit/src/caud_comply.h), which the console calls too.
 */


#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cctl.h"
#include "caud_comply.h"


typedef struct {
    const char  *format;
    const char  *output;
    const char  *since;
    const char  *until;
    const char  *user;
    const char  *room;
    const char  *cursor;
    const char  *batch;
    const char  *time_unit;
    const char  *vkey;
    const char  *actor;
    const char  *scope;
    const char  *target;
    const char  *messages;
    const char  *signins;
    const char  *matter;
    const char  *custodians;
    const char  *rooms;
    const char  *description;
    const char  *now;
    const char  *compress;
    int          no_cursor;
    int          json;
    const char  *pos[3];
    int          npos;
} cctl_copts_t;


static int
cctl_cfail(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
cctl_cfail(int rc, const char *fmt, ...)
{
    va_list  ap;

    fputs("conclavectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);

    return rc;
}


static int
cctl_copts(int argc, char **argv, cctl_copts_t *o)
{
    int          i;
    size_t       k;
    const char  *a;
    struct {
        const char    *name;
        const char   **dst;
    } opts[] = {
        { "--format", &o->format }, { "--output", &o->output },
        { "--since", &o->since }, { "--until", &o->until },
        { "--user", &o->user }, { "--room", &o->room },
        { "--cursor", &o->cursor }, { "--batch", &o->batch },
        { "--time-unit", &o->time_unit }, { "--vkey", &o->vkey },
        { "--actor", &o->actor }, { "--scope", &o->scope },
        { "--target", &o->target }, { "--messages", &o->messages },
        { "--signins", &o->signins }, { "--matter", &o->matter },
        { "--custodians", &o->custodians }, { "--rooms", &o->rooms },
        { "--description", &o->description }, { "--now", &o->now },
        { "--compress", &o->compress },
    };

    memset(o, 0, sizeof(cctl_copts_t));

    for (i = 0; i < argc; i++) {
        a = argv[i];

        if (strcmp(a, "--no-cursor") == 0) {
            o->no_cursor = 1;
            continue;
        }

        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }

        for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strcmp(a, opts[k].name) == 0) {
                break;
            }
        }

        if (k < sizeof(opts) / sizeof(opts[0])) {
            if (i + 1 >= argc) {
                return cctl_cfail(CCTL_ERROR, "%s needs a value", a);
            }
            *opts[k].dst = argv[++i];
            continue;
        }

        if (a[0] == '-' || o->npos == 3) {
            return cctl_cfail(CCTL_ERROR, "unexpected \"%s\" (see "
                              "conclavectl --help)", a);
        }

        o->pos[o->npos++] = a;
    }

    return CCTL_OK;
}


/*
 * Times: "2026-11-27", "2026-11-27T08:00:00Z" (UTC), or "@<Unix
 * seconds>"; microseconds out.
 */
static int
cctl_time(const char *s, int64_t *us)
{
    char       *end;
    struct tm   tm;
    long long   secs;

    if (s[0] == '@') {
        errno = 0;
        secs = strtoll(s + 1, &end, 10);
        if (errno || *end || end == s + 1 || secs < 0
            || secs > 253402300799LL)
        {
            return -1;
        }
        *us = (int64_t) secs * 1000000;
        return 0;
    }

    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end == NULL || *end) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(s, "%Y-%m-%d", &tm);
        if (end == NULL || *end) {
            return -1;
        }
    }

    *us = (int64_t) timegm(&tm) * 1000000;

    return 0;
}


static int
cctl_days(const char *s, int *d)
{
    char  *end;
    long   v;

    if (s == NULL) {
        *d = CAUD_DAYS_FOREVER;
        return 0;
    }

    if (strcmp(s, "forever") == 0) {
        *d = CAUD_DAYS_FOREVER;
        return 0;
    }

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < -1 || v > 36600) {
        return -1;
    }

    *d = (int) v;

    return 0;
}


/* who acts: --actor, else "cli:<unix user>" */
static const char *
cctl_actor(const cctl_copts_t *o, char *buf, size_t size)
{
    struct passwd  *pw;

    if (o->actor) {
        return o->actor;
    }

    pw = getpwuid(geteuid());
    snprintf(buf, size, "cli:%s", pw ? pw->pw_name : "unknown");

    return buf;
}


static void
cctl_admin(cctl_conf_t *cf, caud_admin_t *adm)
{
    adm->dir = cf->audit_dir;
    adm->node = cf->audit_node;
    adm->origin_prefix = cf->origin_prefix;
    adm->key = cf->audit_key;
    adm->db = &cf->db;
}


static void
cctl_progress(void *data, const char *phase, uint64_t done, uint64_t total)
{
    (void) data;

    if (strcmp(phase, "zip") == 0) {
        printf("\rexport: zip %3" PRIu64 "%%          ", done / 10);
    } else if (total) {
        printf("\rexport: %" PRIu64 " of %" PRIu64 " records (%" PRIu64
               "%%)", done, total, done * 100 / total);
    } else {
        printf("\rexport: %" PRIu64 " records", done);
    }

    fflush(stdout);
}


/* the default cursor: one stream per format and filter */
static char *
cctl_cursor_name(const cctl_copts_t *o)
{
    char  *s;

    if (asprintf(&s, "%s%s%s%s%s", o->format, o->user ? " user=" : "",
                 o->user ? o->user : "", o->room ? " room=" : "",
                 o->room ? o->room : "") < 0)
    {
        return NULL;
    }

    return s;
}


static int
cctl_export(cctl_conf_t *cf, const cctl_copts_t *o)
{
    int                    rc;
    char                   err[1024], actor[300], *cursor;
    json_t                *rec;
    caud_admin_t           adm;
    caud_actor_t           a;
    caud_export_opts_t     xo;
    caud_export_result_t   res;

    memset(&xo, 0, sizeof(xo));

    if (o->format == NULL || caud_format_parse(o->format, &xo.format) != 0)
    {
        return cctl_cfail(CCTL_ERROR, "export needs --format actiance|csv|"
                          "eml|jsonl");
    }

    if (o->output == NULL) {
        return cctl_cfail(CCTL_ERROR, "export needs --output DIR");
    }

    if ((o->since && cctl_time(o->since, &xo.since_us) != 0)
        || (o->until && cctl_time(o->until, &xo.until_us) != 0))
    {
        return cctl_cfail(CCTL_ERROR, "times are YYYY-MM-DD, "
                          "YYYY-MM-DDTHH:MM:SSZ or @<unix seconds>");
    }

    if (o->time_unit) {
        if (strcmp(o->time_unit, "ms") == 0) {
            xo.time_unit = CAUD_TIME_MS;
        } else if (strcmp(o->time_unit, "s") == 0) {
            xo.time_unit = CAUD_TIME_S;
        } else if (strcmp(o->time_unit, "us") == 0) {
            xo.time_unit = CAUD_TIME_US;
        } else {
            return cctl_cfail(CCTL_ERROR, "--time-unit is ms, s or us");
        }
    }

    if (o->batch) {
        xo.batch = strtoul(o->batch, NULL, 10);
        if (xo.batch == 0 || xo.batch > 1000000) {
            return cctl_cfail(CCTL_ERROR, "--batch is 1..1000000");
        }
    }

    if (o->compress) {
        xo.level = atoi(o->compress);
        if (strlen(o->compress) != 1 || !isdigit((unsigned char)
                                                 o->compress[0]))
        {
            return cctl_cfail(CCTL_ERROR, "--compress is 0 (stored) to 9");
        }
        xo.level = xo.level ? xo.level : -1;
    }

    if ((o->user && strlen(o->user) > 255)
        || (o->room && strlen(o->room) > 255))
    {
        return cctl_cfail(CCTL_ERROR, "--user and --room are bare JIDs");
    }

    /* --since/--until make an ad hoc export: no cursor is read or moved */
    cursor = NULL;
    if (!o->no_cursor && !o->since && !o->until) {
        cursor = o->cursor ? strdup(o->cursor) : cctl_cursor_name(o);
        if (cursor == NULL || strlen(cursor) > 255) {
            free(cursor);
            return cctl_cfail(CCTL_ERROR, "cursor name too long");
        }
    }

    if (cctl_conf_db(cf, err, sizeof(err)) != 0) {
        free(cursor);
        return cctl_cfail(CCTL_ERROR, "%s", err);
    }

    xo.output_dir = o->output;
    xo.node = cf->audit_node;
    xo.origin_prefix = cf->origin_prefix;
    xo.key = cf->audit_key;
    xo.user = o->user;
    xo.room = o->room;
    xo.cursor = cursor;
    if (isatty(STDOUT_FILENO)) {
        xo.progress = cctl_progress;
    }

    rc = caud_export(&cf->db, &xo, &res, err, sizeof(err));

    if (xo.progress) {
        printf("\n");
    }

    if (rc != 0) {
        free(cursor);
        return cctl_cfail(CCTL_ERROR, "export: %s", err);
    }

    printf("export: %s\nexport: %" PRIu64 " records (%" PRIu64 " messages, "
           "%" PRIu64 " conversation batches) from %" PRIu64 " journals, %"
           PRIu64 " files\n", res.path, res.records, res.messages,
           res.conversations, res.journals, res.files);

    /* the export itself is an audit record (COMPLIANCE.md 7.1) */
    cctl_admin(cf, &adm);
    memset(&a, 0, sizeof(a));
    a.user = cctl_actor(o, actor, sizeof(actor));
    a.transport = "admin";

    rec = caud_record_new("export", CAUD_SUCCESS, caud_now_us());
    rc = -1;
    if (rec && caud_record_set_actor(rec, &a) == 0
        && caud_record_set_object(rec, "export", res.path) == 0
        && caud_record_set_param(rec, "query", json_pack(
               "{s:s,s:I,s:I,s:s?,s:s?,s:s?,s:I}", "format", o->format,
               "since_us", (json_int_t) xo.since_us, "until_us",
               (json_int_t) xo.until_us, "user", o->user, "room", o->room,
               "cursor", cursor, "records", (json_int_t) res.records)) == 0)
    {
        rc = caud_admin_record(&adm, rec, NULL, err, sizeof(err));
    }

    json_decref(rec);
    free(cursor);

    if (rc != 0) {
        return cctl_cfail(CCTL_FINDINGS, "export: recording the export "
                          "failed: %s", err);
    }

    return CCTL_OK;
}


int
cctl_verify_export(int argc, char **argv)
{
    int            rc;
    char           err[1024];
    cctl_copts_t   o;

    if (cctl_copts(argc, argv, &o) != CCTL_OK) {
        return CCTL_ERROR;
    }

    if (o.npos != 1 || o.vkey == NULL) {
        return cctl_cfail(CCTL_ERROR, "usage: conclavectl verify-export "
                          "--vkey VKEY ZIP");
    }

    rc = caud_export_verify(o.pos[0], o.vkey, stdout, err, sizeof(err));
    fflush(stdout);

    if (rc < 0) {
        return cctl_cfail(CCTL_ERROR, "verify-export: %s", err);
    }

    return rc == 0 ? CCTL_OK : CCTL_FINDINGS;
}


static int
cctl_retention(cctl_conf_t *cf, const cctl_copts_t *o)
{
    int                     rc;
    char                    err[1024], actor[300], *s;
    json_t                 *j;
    int64_t                 now;
    const char             *sub, *who;
    caud_admin_t            adm;
    caud_policy_t           p;
    caud_retention_stats_t  st;

    sub = o->npos ? o->pos[0] : "show";
    who = cctl_actor(o, actor, sizeof(actor));
    cctl_admin(cf, &adm);
    rc = -1;

    if (strcmp(sub, "show") == 0) {
        j = caud_retention_show(&cf->db, err, sizeof(err));
        if (j == NULL) {
            return cctl_cfail(CCTL_ERROR, "retention: %s", err);
        }
        s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
        return CCTL_OK;

    } else if (strcmp(sub, "profile") == 0 && o->npos == 2) {
        rc = caud_profile_set(&cf->db, &adm, who, o->pos[1], err,
                              sizeof(err));

    } else if (strcmp(sub, "set") == 0) {
        memset(&p, 0, sizeof(p));
        p.scope = o->scope ? o->scope : "global";
        p.target = o->target ? o->target : "";
        if (cctl_days(o->messages, &p.messages_days) != 0
            || cctl_days(o->signins, &p.signins_days) != 0)
        {
            return cctl_cfail(CCTL_ERROR, "--messages and --signins are "
                              "days (1..36600) or forever");
        }
        rc = caud_policy_set(&cf->db, &adm, who, &p, err, sizeof(err));

    } else if (strcmp(sub, "remove") == 0) {
        rc = caud_policy_remove(&cf->db, &adm, who,
                                o->scope ? o->scope : "global",
                                o->target ? o->target : "", err,
                                sizeof(err));

    } else if (strcmp(sub, "run") == 0) {
        now = 0;
        if (o->now && cctl_time(o->now, &now) != 0) {
            return cctl_cfail(CCTL_ERROR, "--now: a time");
        }
        rc = caud_retention_run(&cf->db, &adm, who, now,
                                o->batch ? strtoul(o->batch, NULL, 10) : 0,
                                &st, err, sizeof(err));
        if (rc == 0) {
            printf("retention: %" PRIu64 " records examined, %" PRIu64
                   " deleted in %" PRIu64 " batches, %" PRIu64 " kept by "
                   "legal holds\n", st.examined, st.deleted, st.batches,
                   st.held);
        }

    } else {
        return cctl_cfail(CCTL_ERROR, "retention: show | profile NAME | set "
                          "| remove | run (see conclavectl --help)");
    }

    if (rc != 0) {
        return cctl_cfail(CCTL_FINDINGS, "retention %s: %s", sub, err);
    }

    if (strcmp(sub, "run") != 0) {
        printf("retention %s: done\n", sub);
    }

    return CCTL_OK;
}


static int
cctl_hold(cctl_conf_t *cf, const cctl_copts_t *o)
{
    int            rc;
    char           err[1024], actor[300];
    const char    *sub, *who;
    caud_hold_t    h;
    caud_admin_t   adm;

    sub = o->npos ? o->pos[0] : "";
    who = cctl_actor(o, actor, sizeof(actor));
    cctl_admin(cf, &adm);

    if (strcmp(sub, "create") == 0) {
        memset(&h, 0, sizeof(h));
        h.matter = o->matter;
        h.description = o->description;
        h.custodians = o->custodians;
        h.rooms = o->rooms;
        if ((o->since && cctl_time(o->since, &h.since_us) != 0)
            || (o->until && cctl_time(o->until, &h.until_us) != 0))
        {
            return cctl_cfail(CCTL_ERROR, "times are YYYY-MM-DD, "
                              "YYYY-MM-DDTHH:MM:SSZ or @<unix seconds>");
        }
        rc = caud_hold_create(&cf->db, &adm, who, &h, err, sizeof(err));

    } else if (strcmp(sub, "release") == 0 && o->matter) {
        rc = caud_hold_release(&cf->db, &adm, who, o->matter, err,
                               sizeof(err));

    } else {
        return cctl_cfail(CCTL_ERROR, "hold: create --matter M [--custodians"
                          " J,..] [--rooms R,..] [--since T] [--until T] | "
                          "release --matter M");
    }

    if (rc != 0) {
        return cctl_cfail(CCTL_FINDINGS, "hold %s: %s", sub, err);
    }

    printf("hold %s: %s\n", sub, o->matter ? o->matter : "");

    return CCTL_OK;
}


int
cctl_comply(cctl_conf_t *cf, const char *command, int argc, char **argv)
{
    char          err[1024];
    cctl_copts_t  o;

    if (cctl_copts(argc, argv, &o) != CCTL_OK) {
        return CCTL_ERROR;
    }

    if (cctl_conf_db(cf, err, sizeof(err)) != 0) {
        return cctl_cfail(CCTL_ERROR, "%s", err);
    }

    if (strcmp(command, "export") == 0) {
        return cctl_export(cf, &o);
    }

    if (strcmp(command, "retention") == 0) {
        return cctl_retention(cf, &o);
    }

    return cctl_hold(cf, &o);
}
