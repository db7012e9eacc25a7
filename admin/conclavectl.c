
/*
 * conclavectl: the appliance CLI (admin/README.md, docs/audit.md
 * "conclavectl").  It reads the module's own configuration, nginx.conf,
 * so it always talks to the journals and the database nginx uses.
 *
 * Exit status: 0 all is well; 1 verify found something, or a journal
 * could not be shipped or a migration failed; 2 usage, configuration
 * or connection errors.  Errors are one line on stderr.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mysql.h>

#include "cctl.h"


/* the appliance's own nginx.conf (conclavectl setup), else nginx's */
#define CCTL_CONFIG        "/etc/conclave/nginx.conf"
#define CCTL_CONFIG_NGINX  "/etc/nginx/nginx.conf"
#define CCTL_SCHEMA        "/usr/share/conclave/schema"
#define CCTL_BACKUPS       "/var/backups/conclave"
#define CCTL_JOURNALS_MAX  65536

#ifndef CCTL_BUILD_SCHEMA
#define CCTL_BUILD_SCHEMA  NULL
#endif


typedef struct {
    const char  *config;
    const char  *command;
    const char  *schema;
    const char  *vkey;
    const char  *dir;
    const char  *keep_days;
    int          json;
    int          journals_only;
    int          db_only;
    int          all;
    int          rest;          /* compliance commands: their options */
} cctl_opts_t;


static const char  cctl_usage[] =
"usage: conclavectl [--config FILE] COMMAND [options]\n"
"\n"
"Reads the http-level conclave_* directives of nginx.conf (default\n"
CCTL_CONFIG ", or " CCTL_CONFIG_NGINX " when that does not\n"
"exist; includes followed) and acts on the audit journals\n"
"in conclave_audit_dir and the MariaDB named by conclave_audit_db_*.\n"
"\n"
"commands:\n"
"  setup [--answers FILE] [--non-interactive] [--OPTION VALUE ...]\n"
"        first-run configuration: asks (in a terminal) or reads the\n"
"        answers, checks each live (LDAP bind, MariaDB, certificate),\n"
"        writes /etc/conclave/ all or nothing, migrates the schema and\n"
"        creates the signing key; \"conclavectl setup --help\" lists\n"
"        the answers.\n"
"  prune [--keep-days N]\n"
"        remove journal segments whose records MariaDB has (at or\n"
"        below the journal's shipped_seq) and that are older than N\n"
"        days (default 30); never a journal's newest segment.  Full\n"
"        verify then reports the pruned head; verify --db-only checks\n"
"        it in MariaDB.\n"
"  backup-schema [--dir DIR]\n"
"        write the audit database's table definitions and applied\n"
"        schema versions to DIR/schema-<time>.sql (default\n"
"        " CCTL_BACKUPS "); the package runs it before migrating.\n"
"  migrate [--schema DIR]\n"
"        apply the schema files (NNN_name.sql) MariaDB does not have\n"
"        yet, in order, and record them in schema_version; re-running\n"
"        applies nothing.  DIR defaults to " CCTL_SCHEMA ",\n"
"        or, when that does not exist, the build tree's audit/schema.\n"
"  ship [--all]\n"
"        one pass: copy every journal's unshipped records into\n"
"        MariaDB (exactly once), then its checkpoint notes.  Journals a\n"
"        live nginx worker holds are its own shipper's business and are\n"
"        skipped, unless --all.\n"
"  status [--json]\n"
"        per journal: last seq, shipped_seq in MariaDB, the backlog in\n"
"        records and bytes, the shipping lag (age of the oldest\n"
"        unshipped record, seconds), whether a live writer holds it,\n"
"        and its last checkpoint (file, and stored in MariaDB).\n"
"  keygen\n"
"        create the Ed25519 checkpoint key at conclave_audit_key (0600,\n"
"        never replaced) unless it exists; print its verifier key.\n"
"  vkey\n"
"        print the verifier key of conclave_audit_key.\n"
"  verify [--journals-only | --db-only] [--vkey VKEY]\n"
"        check the journals (CRC, hash chain, signed checkpoints) and\n"
"        MariaDB (hashes, links, gaps, copied columns, checkpoints)\n"
"        and each against the other; one line per finding.  The\n"
"        verifier key is derived from conclave_audit_key unless VKEY is\n"
"        given (an auditor should pass the one recorded at keygen).\n"
"\n"
"compliance (docs/compliance.md):\n"
"  export --format actiance|csv|eml|jsonl --output DIR [--since T]\n"
"         [--until T] [--user JID] [--room JID] [--cursor NAME]\n"
"         [--no-cursor] [--batch N] [--time-unit ms|s|us] [--actor WHO]\n"
"         [--compress 0-9]\n"
"        one zip in DIR (deflate level 1; --compress 0 stores): the\n"
"        format's files, records.jsonl, the chain\n"
"        (entry hashes and the signed checkpoint), a signed manifest.\n"
"        Without --since/--until it continues from its cursor (one per\n"
"        format and filter, or --cursor NAME) and moves it.  T is\n"
"        YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or @<unix seconds>, UTC.\n"
"  verify-export --vkey VKEY ZIP\n"
"        check an export offline: signature, manifest, chain.\n"
"  retention show | profile none|sec|mifid|cn\n"
"  retention set [--scope global|room|user] [--target JID]\n"
"         [--messages DAYS|forever] [--signins DAYS|forever]\n"
"  retention remove [--scope S] [--target JID]\n"
"  retention run [--batch N] [--now T]\n"
"        policies, the profile's floors, and a run that deletes what\n"
"        retention lets go and no legal hold keeps (signed tombstones).\n"
"  hold create --matter M [--custodians JID,..] [--rooms JID,..]\n"
"         [--since T] [--until T] [--description TEXT]\n"
"  hold release --matter M\n"
"        every change is an audit record (actor: --actor or cli:<user>).\n"
"\n"
"options:\n"
"  --config FILE   nginx.conf to read instead of " CCTL_CONFIG "\n"
"  -h, --help      this text\n"
"\n"
"Key name and checkpoint origin prefix: <conclave_domain>/audit/<node>.\n"
"Exit status: 0 ok; 1 verify findings, or a ship or migration that\n"
"failed; 2 usage, configuration or connection errors.\n";


static int
cctl_fail(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


static int
cctl_fail(int rc, const char *fmt, ...)
{
    va_list  ap;

    fputs("conclavectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);

    return rc;
}


/* each option belongs to one command */
static int
cctl_args_check(const cctl_opts_t *o)
{
    size_t       i;
    const char  *c;
    static const char  *known[] = {
        "migrate", "ship", "status", "keygen", "vkey", "verify",
        "backup-schema", "prune", "export", "verify-export", "retention",
        "hold"
    };

    c = o->command;

    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(c, known[i]) == 0) {
            break;
        }
    }

    if (i == sizeof(known) / sizeof(known[0])) {
        return cctl_fail(CCTL_ERROR, "unknown command \"%s\" (see "
                         "conclavectl --help)", c);
    }

    if ((o->schema && strcmp(c, "migrate") != 0)
        || (o->all && strcmp(c, "ship") != 0)
        || (o->json && strcmp(c, "status") != 0)
        || (o->dir && strcmp(c, "backup-schema") != 0)
        || (o->keep_days && strcmp(c, "prune") != 0)
        || ((o->vkey || o->journals_only || o->db_only)
            && strcmp(c, "verify") != 0))
    {
        return cctl_fail(CCTL_ERROR, "an option does not apply to \"%s\" "
                         "(see conclavectl --help)", c);
    }

    if (o->journals_only && o->db_only) {
        return cctl_fail(CCTL_ERROR, "--journals-only and --db-only "
                         "exclude each other");
    }

    return CCTL_OK;
}


static int
cctl_is_comply(const char *c)
{
    return strcmp(c, "export") == 0 || strcmp(c, "verify-export") == 0
           || strcmp(c, "retention") == 0 || strcmp(c, "hold") == 0;
}


static int
cctl_args(int argc, char **argv, cctl_opts_t *o)
{
    int          i;
    const char  *a;

    memset(o, 0, sizeof(cctl_opts_t));
    o->config = access(CCTL_CONFIG, F_OK) == 0 ? CCTL_CONFIG
                                               : CCTL_CONFIG_NGINX;

    for (i = 1; i < argc; i++) {
        a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(cctl_usage, stdout);
            exit(CCTL_OK);
        }

        if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--journals-only") == 0) {
            o->journals_only = 1;
        } else if (strcmp(a, "--db-only") == 0) {
            o->db_only = 1;
        } else if (strcmp(a, "--all") == 0) {
            o->all = 1;
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            o->config = argv[++i];
        } else if (strcmp(a, "--schema") == 0 && i + 1 < argc) {
            o->schema = argv[++i];
        } else if (strcmp(a, "--vkey") == 0 && i + 1 < argc) {
            o->vkey = argv[++i];
        } else if (strcmp(a, "--dir") == 0 && i + 1 < argc) {
            o->dir = argv[++i];
        } else if (strcmp(a, "--keep-days") == 0 && i + 1 < argc) {
            o->keep_days = argv[++i];
            if (strspn(o->keep_days, "0123456789") != strlen(o->keep_days)
                || strlen(o->keep_days) == 0 || strlen(o->keep_days) > 5)
            {
                return cctl_fail(CCTL_ERROR, "--keep-days takes a number "
                                 "of days");
            }
        } else if (a[0] == '-' || o->command) {
            return cctl_fail(CCTL_ERROR, "unexpected \"%s\" (see "
                             "conclavectl --help)", a);
        } else {
            o->command = a;

            if (cctl_is_comply(a)) {
                o->rest = i + 1;
                break;
            }
        }
    }

    if (o->command == NULL) {
        return cctl_fail(CCTL_ERROR, "no command (see conclavectl --help)");
    }

    return cctl_args_check(o);
}


static int
cctl_is_dir(const char *path)
{
    struct stat  st;

    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}


/* MariaDB answers at all: tells "cannot connect" (2) from "failed" (1) */
static int
cctl_db_check(cctl_conf_t *cf)
{
    char    err[512];
    MYSQL  *m;

    if (cctl_conf_db(cf, err, sizeof(err)) != 0) {
        return cctl_fail(CCTL_ERROR, "%s", err);
    }

    m = caud_db_connect(&cf->db, err, sizeof(err));
    if (m == NULL) {
        return cctl_fail(CCTL_ERROR, "%s", err);
    }

    mysql_close(m);

    return CCTL_OK;
}


static int
cctl_migrate(cctl_conf_t *cf, const cctl_opts_t *o)
{
    int          n;
    char         err[512];
    const char  *dir;

    dir = o->schema;
    if (dir == NULL) {
        dir = cctl_is_dir(CCTL_SCHEMA) ? CCTL_SCHEMA : CCTL_BUILD_SCHEMA;
    }

    if (!cctl_is_dir(dir)) {
        return cctl_fail(CCTL_ERROR, "schema directory %s: %s",
                         dir ? dir : CCTL_SCHEMA, strerror(ENOENT));
    }

    if (cctl_db_check(cf) != CCTL_OK) {
        return CCTL_ERROR;
    }

    n = caud_db_migrate(&cf->db, dir, stdout, err, sizeof(err));
    if (n < 0) {
        return cctl_fail(CCTL_FINDINGS, "migrate: %s", err);
    }

    printf("schema: %d file%s applied from %s\n", n, n == 1 ? "" : "s",
           dir);

    return CCTL_OK;
}


static int
cctl_ship(cctl_conf_t *cf, const cctl_opts_t *o)
{
    int              rc;
    char             err[1024];
    size_t           i, n;
    int64_t          got;
    uint32_t        *ids;
    caud_shipper_t  *sh;

    if (cctl_db_check(cf) != CCTL_OK) {
        return CCTL_ERROR;
    }

    ids = malloc(CCTL_JOURNALS_MAX * sizeof(uint32_t));
    if (ids == NULL) {
        return cctl_fail(CCTL_ERROR, "out of memory");
    }

    if (caud_journal_list(cf->audit_dir, ids, CCTL_JOURNALS_MAX, &n) != 0) {
        free(ids);
        return cctl_fail(CCTL_ERROR, "journals in %s: %s", cf->audit_dir,
                         strerror(errno));
    }

    sh = caud_shipper_new(&cf->db, cf->audit_dir, cf->audit_node,
                          cf->ship_batch, err, sizeof(err));
    if (sh == NULL) {
        free(ids);
        return cctl_fail(CCTL_ERROR, "%s", err);
    }

    rc = CCTL_OK;

    for (i = 0; i < n; i++) {
        if (!o->all && caud_journal_locked(cf->audit_dir, ids[i]) == 1) {
            printf("journal %" PRIu32 ": held by a live writer, which "
                   "ships it (--all ships it anyway)\n", ids[i]);
            continue;
        }

        got = caud_shipper_ship(sh, ids[i], 0, err, sizeof(err));
        if (got < 0) {
            rc = cctl_fail(CCTL_FINDINGS, "ship: %s", err);
            continue;
        }

        printf("journal %" PRIu32 ": %" PRId64 " records shipped, "
               "shipped_seq %" PRIu64 "\n", ids[i], got,
               caud_shipper_shipped_seq(sh, ids[i]));
    }

    if (n == 0) {
        printf("no journals in %s\n", cf->audit_dir);
    }

    caud_shipper_free(sh);
    free(ids);

    return rc;
}


static int
cctl_keygen(cctl_conf_t *cf, int create)
{
    char            err[512], vkey[CAUD_VKEY_MAX];
    caud_signer_t  *s;

    if (create && access(cf->audit_key, F_OK) != 0) {
        if (caud_key_generate(cf->audit_key, err, sizeof(err)) != 0) {
            return cctl_fail(CCTL_ERROR, "keygen: %s", err);
        }

        fprintf(stderr, "conclavectl: created %s\n", cf->audit_key);

    } else if (create) {
        fprintf(stderr, "conclavectl: %s exists, kept\n", cf->audit_key);
    }

    s = caud_signer_load(cf->audit_key, cf->origin_prefix, err, sizeof(err));
    if (s == NULL) {
        return cctl_fail(CCTL_ERROR, "conclave_audit_key %s: %s%s",
                         cf->audit_key, err,
                         create ? "" : " (create it with conclavectl "
                                       "keygen)");
    }

    if (caud_signer_vkey(s, vkey, sizeof(vkey)) != 0) {
        caud_signer_free(s);
        return cctl_fail(CCTL_ERROR, "verifier key of %s failed",
                         cf->audit_key);
    }

    caud_signer_free(s);
    printf("%s\n", vkey);

    return CCTL_OK;
}


static int
cctl_verify(cctl_conf_t *cf, const cctl_opts_t *o)
{
    int                  rc;
    char                 err[1024], vkey[CAUD_VKEY_MAX];
    caud_signer_t       *s;
    caud_verify_opts_t   v;

    if (o->vkey) {
        snprintf(vkey, sizeof(vkey), "%s", o->vkey);

    } else {
        s = caud_signer_load(cf->audit_key, cf->origin_prefix, err,
                             sizeof(err));
        if (s == NULL || caud_signer_vkey(s, vkey, sizeof(vkey)) != 0) {
            caud_signer_free(s);
            return cctl_fail(CCTL_ERROR, "conclave_audit_key %s: %s (or "
                             "pass --vkey)", cf->audit_key,
                             s ? "no verifier key" : err);
        }

        caud_signer_free(s);
    }

    memset(&v, 0, sizeof(v));
    v.dir = o->db_only ? NULL : cf->audit_dir;
    v.node = cf->audit_node;
    v.origin_prefix = cf->origin_prefix;
    v.vkey = vkey;
    v.out = stdout;

    if (!o->journals_only) {
        if (cctl_db_check(cf) != CCTL_OK) {
            return CCTL_ERROR;
        }
        v.db = &cf->db;
    }

    rc = caud_verify(&v, err, sizeof(err));
    fflush(stdout);

    if (rc < 0) {
        return cctl_fail(CCTL_ERROR, "verify: %s", err);
    }

    return rc == 0 ? CCTL_OK : CCTL_FINDINGS;
}


int
main(int argc, char **argv)
{
    int           rc;
    char          err[1024];
    cctl_conf_t   cf;
    cctl_opts_t   o;

    /* setup writes the configuration the other commands read */
    if (argc > 1 && strcmp(argv[1], "setup") == 0) {
        rc = cctl_setup(argc - 2, argv + 2);
        caud_db_thread_end();
        mysql_library_end();
        return rc;
    }

    if (cctl_args(argc, argv, &o) != CCTL_OK) {
        return CCTL_ERROR;
    }

    /* offline: an auditor's machine has no nginx.conf */
    if (strcmp(o.command, "verify-export") == 0) {
        return cctl_verify_export(argc - o.rest, argv + o.rest);
    }

    if (cctl_conf_load(o.config, &cf, err, sizeof(err)) != 0) {
        cctl_conf_free(&cf);
        return cctl_fail(CCTL_ERROR, "%s", err);
    }

    if (strcmp(o.command, "migrate") == 0) {
        rc = cctl_migrate(&cf, &o);
    } else if (strcmp(o.command, "ship") == 0) {
        rc = cctl_ship(&cf, &o);
    } else if (strcmp(o.command, "status") == 0) {
        rc = cctl_status(&cf, o.json);
    } else if (strcmp(o.command, "keygen") == 0) {
        rc = cctl_keygen(&cf, 1);
    } else if (strcmp(o.command, "vkey") == 0) {
        rc = cctl_keygen(&cf, 0);
    } else if (strcmp(o.command, "prune") == 0) {
        rc = cctl_prune(&cf, o.keep_days ? (unsigned) atoi(o.keep_days)
                                         : 30);
    } else if (strcmp(o.command, "backup-schema") == 0) {
        rc = cctl_backup_schema(&cf, o.dir ? o.dir : CCTL_BACKUPS);
    } else if (o.rest) {
        rc = cctl_comply(&cf, o.command, argc - o.rest, argv + o.rest);
    } else {
        rc = cctl_verify(&cf, &o);
    }

    cctl_conf_free(&cf);
    caud_db_thread_end();
    mysql_library_end();

    return rc;
}
