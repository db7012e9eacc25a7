
/*
 * verify_cli: runs caud_verify() for tests and benchmarks, the way
 * `conclavectl verify` does, without a configuration file.
 *
 *   verify_cli [options]
 *   verify_cli --keygen KEYFILE NAME
 *                      makes an Ed25519 key (0600, never replaced) and
 *                      prints its verifier key
 *   verify_cli --migrate SCHEMA_DIR [MariaDB options]
 *                      caud_db_migrate()
 *   verify_cli --ship DIR --node NODE [MariaDB options]
 *                      the real shipper (caud_shipper_ship()) over every
 *                      journal in DIR, to its end; prints "shipped N"
 *
 *   --dir DIR          the journal directory (omit: MariaDB only)
 *   --node NODE        the node name in MariaDB (default "local")
 *   --prefix P         checkpoint origin prefix "<domain>/audit/<node>"
 *   --vkey VKEY        the signed-note verifier key, or
 *   --vkey-file F      a file holding it (first line)
 *   --host IP --port N | --socket PATH
 *   --user U --password PW --database DB
 *                      MariaDB (omit all: journals only)
 *   --timeout S        connect/read/write timeout
 *
 * The report goes to stdout.  Exit 0: all is well; 1: findings; 2:
 * verify could not run (the reason on stderr).  Until `conclavectl`
 * has ship and verify, the integration tests drive the library here.
 *
 *   cc -Iaudit/src $(mariadb_config --cflags) -o verify_cli \
 *       tests/lib/verify_cli.c audit/src/caud_record.c \
 *       audit/src/caud_journal.c audit/src/caud_journal_dir.c \
 *       audit/src/caud_checkpoint.c audit/src/caud_db.c \
 *       audit/src/caud_ship.c audit/src/caud_verify.c \
 *       -lcrypto -ljansson -lpthread $(mariadb_config --libs)
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caud.h"


static int
vcli_read_vkey(const char *path, char *buf, size_t size)
{
    FILE  *f;

    f = fopen(path, "r");
    if (f == NULL || fgets(buf, (int) size, f) == NULL) {
        if (f) {
            fclose(f);
        }
        return -1;
    }

    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';

    return 0;
}


static int
vcli_keygen(const char *path, const char *name)
{
    char            err[512], vkey[CAUD_VKEY_MAX];
    caud_signer_t  *s;

    if (caud_key_generate(path, err, sizeof(err)) != 0
        || (s = caud_signer_load(path, name, err, sizeof(err))) == NULL)
    {
        fprintf(stderr, "verify_cli: %s\n", err);
        return 2;
    }

    if (caud_signer_vkey(s, vkey, sizeof(vkey)) != 0) {
        fprintf(stderr, "verify_cli: vkey too long\n");
        caud_signer_free(s);
        return 2;
    }

    printf("%s\n", vkey);
    caud_signer_free(s);

    return 0;
}


static int
vcli_ship(const char *dir, const char *node, const caud_db_opts_t *db)
{
    char             err[1024];
    size_t           i, n;
    int64_t          got, total;
    uint32_t         ids[1024];
    caud_shipper_t  *sh;

    if (caud_journal_list(dir, ids, 1024, &n) != 0) {
        fprintf(stderr, "verify_cli: %s: cannot list journals\n", dir);
        return 2;
    }

    sh = caud_shipper_new(db, dir, node, 1000, err, sizeof(err));
    if (sh == NULL) {
        fprintf(stderr, "verify_cli: %s\n", err);
        return 2;
    }

    total = 0;

    for (i = 0; i < n; i++) {
        got = caud_shipper_ship(sh, ids[i], 0, err, sizeof(err));
        if (got < 0) {
            fprintf(stderr, "verify_cli: ship %u: %s\n", ids[i], err);
            caud_shipper_free(sh);
            return 2;
        }

        total += got;
    }

    caud_shipper_free(sh);
    caud_db_thread_end();
    printf("shipped %lld\n", (long long) total);

    return 0;
}


int
main(int argc, char **argv)
{
    int                  i, rc, use_db;
    char                 err[1024], vkey[CAUD_VKEY_MAX];
    const char          *a, *v, *migrate;
    caud_db_opts_t       db;
    caud_verify_opts_t   o;

    if (argc == 4 && strcmp(argv[1], "--keygen") == 0) {
        return vcli_keygen(argv[2], argv[3]);
    }

    memset(&db, 0, sizeof(db));
    memset(&o, 0, sizeof(o));
    o.node = "local";
    o.out = stdout;
    use_db = 0;
    migrate = NULL;

    for (i = 1; i + 1 < argc; i += 2) {
        a = argv[i];
        v = argv[i + 1];

        if (strcmp(a, "--dir") == 0) {
            o.dir = v;
        } else if (strcmp(a, "--node") == 0) {
            o.node = v;
        } else if (strcmp(a, "--prefix") == 0) {
            o.origin_prefix = v;
        } else if (strcmp(a, "--vkey") == 0) {
            o.vkey = v;
        } else if (strcmp(a, "--vkey-file") == 0) {
            if (vcli_read_vkey(v, vkey, sizeof(vkey)) != 0) {
                fprintf(stderr, "verify_cli: cannot read %s\n", v);
                return 2;
            }
            o.vkey = vkey;
        } else if (strcmp(a, "--host") == 0) {
            db.host = v;
            use_db = 1;
        } else if (strcmp(a, "--port") == 0) {
            db.port = (unsigned) atoi(v);
        } else if (strcmp(a, "--socket") == 0) {
            db.socket = v;
            use_db = 1;
        } else if (strcmp(a, "--user") == 0) {
            db.user = v;
        } else if (strcmp(a, "--password") == 0) {
            db.password = v;
        } else if (strcmp(a, "--database") == 0) {
            db.database = v;
        } else if (strcmp(a, "--timeout") == 0) {
            db.timeout_s = (unsigned) atoi(v);
        } else if (strcmp(a, "--migrate") == 0) {
            migrate = v;
        } else if (strcmp(a, "--ship") == 0) {
            o.dir = v;
            o.out = NULL;
        } else {
            break;
        }
    }

    if (i < argc) {
        goto usage;
    }

    if (migrate) {
        rc = caud_db_migrate(&db, migrate, stdout, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "verify_cli: %s\n", err);
            return 2;
        }
        return 0;
    }

    if (o.out == NULL) {
        return vcli_ship(o.dir, o.node, &db);
    }

    if (o.vkey == NULL || o.origin_prefix == NULL) {
        goto usage;
    }

    if (use_db) {
        o.db = &db;
    }

    err[0] = '\0';
    rc = caud_verify(&o, err, sizeof(err));
    fflush(stdout);

    if (rc < 0) {
        fprintf(stderr, "verify_cli: %s\n", err);
        return 2;
    }

    return rc;

usage:

    fprintf(stderr, "usage: verify_cli [--dir DIR] [--node NODE] --prefix P "
            "(--vkey VKEY | --vkey-file F) [--host IP --port N | --socket "
            "PATH] [--user U] [--password PW] [--database DB] [--timeout "
            "S]\n       verify_cli --keygen KEYFILE NAME\n"
            "       verify_cli --migrate SCHEMA_DIR [MariaDB options]\n"
            "       verify_cli --ship DIR --node NODE [MariaDB options]\n");
    return 2;
}
