
/*
 * conclavectl setup: what cctl_setup.c (answers, checks) and
 * cctl_setup_files.c (staging, renames, backup-schema) share.
 */


#ifndef _CCTL_SETUP_H_INCLUDED_
#define _CCTL_SETUP_H_INCLUDED_


#define CCTL_TIMEOUT_S    5     /* LDAP and MariaDB checks */


typedef struct {
    char  *domain;
    char  *ldap_uri;
    char  *ldap_bind_dn;
    char  *ldap_password_file;
    char  *ldap_base;
    char  *ldap_filter;
    char  *ldap_group;
    char  *db;
    char  *db_password_file;
    char  *tls_cert;
    char  *tls_key;
    char  *self_signed;
    char  *prefix;
    char  *https_listen;
    char  *xmpp_listen;
    char  *xmpps_listen;
    char  *user;
    char  *module;
    char  *share;
    char  *nginx;
    char  *admin_group;        /* console roles; "" = none */
    char  *compliance_group;
    char  *auditor_group;

    /* derived */
    char  *ldap_password;
    char  *db_password;
    char  *db_user;
    char  *db_host;
    char  *db_socket;
    char  *db_name;
    unsigned  db_port;
    int    interactive;
    int    no_nginx_test;
} cctl_answers_t;


int cctl_setup_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
char *cctl_join(const char *a, const char *b);
int cctl_setup_install(cctl_answers_t *a);


#endif /* _CCTL_SETUP_H_INCLUDED_ */
