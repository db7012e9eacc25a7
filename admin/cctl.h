
/*
 * conclavectl: the appliance CLI (admin/README.md).  Shared between its
 * files: the configuration it reads from nginx.conf, and the commands.
 */


#ifndef _CCTL_H_INCLUDED_
#define _CCTL_H_INCLUDED_


#include <stdint.h>
#include <stdio.h>

#include "caud.h"


#define CCTL_OK        0
#define CCTL_FINDINGS  1        /* ran, and found or failed something */
#define CCTL_ERROR     2        /* usage, configuration or connection */

#define CCTL_FSYNC_ALWAYS    0
#define CCTL_FSYNC_INTERVAL  1
#define CCTL_FSYNC_OFF       2


/*
 * The http-level conclave_* directives conclavectl needs, with the
 * module's defaults (nginx-module/src/ngx_xmpp_conf.c).  Strings are
 * malloc()ed; times are milliseconds.
 */
typedef struct {
    char      *path;                  /* the main file */
    char      *prefix;                /* its directory */

    char      *domain;
    char      *audit_dir;
    char      *audit_node;
    char      *audit_key;             /* resolved against prefix */
    int        audit_fsync;
    uint64_t   audit_fsync_interval;
    uint64_t   audit_checkpoint_records;
    uint64_t   audit_checkpoint_interval;
    char      *db_host;
    uint64_t   db_port;
    char      *db_socket;
    char      *db_user;
    char      *db_password;
    char      *db_password_file;      /* resolved; read when needed */
    char      *db_name;
    uint64_t   db_timeout;
    uint64_t   ship_batch;

    /* "<domain>/audit/<node>": key name and checkpoint origin prefix */
    char      *origin_prefix;

    /* filled by cctl_conf_db() */
    char      *password_buf;
    caud_db_opts_t  db;
} cctl_conf_t;


int cctl_conf_load(const char *path, cctl_conf_t *cf, char *err,
    size_t errlen);
int cctl_conf_db(cctl_conf_t *cf, char *err, size_t errlen);
void cctl_conf_free(cctl_conf_t *cf);

/* nginx's time syntax ("1h30m", "500ms"; bare numbers in ms) */
int cctl_parse_msec(const char *s, uint64_t *ms);

/* export, verify-export, retention, hold (cctl_comply.c): their own
 * options, argv after the command */
int cctl_comply(cctl_conf_t *cf, const char *command, int argc,
    char **argv);
int cctl_verify_export(int argc, char **argv);

/* `conclavectl status` (cctl_status.c) */
int cctl_status(cctl_conf_t *cf, int json);

/* `conclavectl setup` and `backup-schema` (cctl_setup.c) */
int cctl_setup(int argc, char **argv);
int cctl_backup_schema(cctl_conf_t *cf, const char *dir);

/* `conclavectl prune` (cctl_prune.c) */
int cctl_prune(cctl_conf_t *cf, unsigned keep_days);


#endif /* _CCTL_H_INCLUDED_ */
