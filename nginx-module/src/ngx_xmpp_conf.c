
/*
 * Configuration shared by the transports, and the per-worker set-up:
 * the directory handle, the thread pool, the registry zone, the
 * inter-worker socket and a housekeeping timer.
 */


#include "ngx_xmpp.h"

#if (NGX_LINUX && defined __GLIBC__)
#include <malloc.h>
#endif


#define NGX_XMPP_HOUSEKEEPING   1000
#define NGX_XMPP_PURGE_EVERY    30
#define NGX_XMPP_TRIM_PARSERS   8       /* 128 KiB of parsers freed */


static void ngx_xmpp_housekeeping(ngx_event_t *ev);
static void ngx_xmpp_return_memory(void);


static ngx_event_t       ngx_xmpp_housekeeping_ev;
static ngx_connection_t  ngx_xmpp_dumb;
static ngx_xmpp_conf_t  *ngx_xmpp_worker_conf;
static ngx_uint_t        ngx_xmpp_housekeeping_ticks;
static ngx_uint_t        ngx_xmpp_shutting_down;


void *
ngx_xmpp_conf_create(ngx_conf_t *cf)
{
    ngx_xmpp_conf_t  *xcf;

    xcf = ngx_pcalloc(cf->pool, sizeof(ngx_xmpp_conf_t));
    if (xcf == NULL) {
        return NULL;
    }

    xcf->ldap_timeout = NGX_CONF_UNSET_MSEC;
    xcf->ldap_page_size = NGX_CONF_UNSET;
    xcf->ldap_pool_size = NGX_CONF_UNSET_UINT;
    xcf->ldap_starttls = NGX_CONF_UNSET;
    xcf->ldap_tls_verify = NGX_CONF_UNSET;
    xcf->ldap_group_mode = NGX_CONF_UNSET_UINT;
    xcf->ldap_group_depth = NGX_CONF_UNSET_UINT;
    xcf->ldap_max_groups = NGX_CONF_UNSET_UINT;
    xcf->ldap_revalidate = NGX_CONF_UNSET_MSEC;
    xcf->ldap_shared_groups = NGX_CONF_UNSET_PTR;
    xcf->ldap_refresh = NGX_CONF_UNSET_MSEC;
    xcf->ldap_shared_max = NGX_CONF_UNSET_UINT;
    xcf->ldap_search_max = NGX_CONF_UNSET_UINT;
    xcf->ldap_outage = NGX_CONF_UNSET_UINT;
    xcf->ldap_cache_ttl = NGX_CONF_UNSET;
    xcf->ldap_photo_max = NGX_CONF_UNSET_SIZE;
    xcf->ldap_vcard_cache_size = NGX_CONF_UNSET_SIZE;
    xcf->ldap_vcard_cache_ttl = NGX_CONF_UNSET;
    xcf->max_stanza_size = NGX_CONF_UNSET_SIZE;
    xcf->max_stanza_size_preauth = NGX_CONF_UNSET_SIZE;
    xcf->max_depth = NGX_CONF_UNSET_UINT;
    xcf->max_attrs = NGX_CONF_UNSET_UINT;
    xcf->ws_max_message = NGX_CONF_UNSET_SIZE;
    xcf->max_output = NGX_CONF_UNSET_SIZE;
    xcf->auth_timeout = NGX_CONF_UNSET_MSEC;
    xcf->idle_timeout = NGX_CONF_UNSET_MSEC;
    xcf->close_timeout = NGX_CONF_UNSET_MSEC;
    xcf->max_auth_failures = NGX_CONF_UNSET_UINT;
    xcf->max_address_failures = NGX_CONF_UNSET_UINT;
    xcf->address_lockout = NGX_CONF_UNSET_MSEC;
    xcf->max_account_failures = NGX_CONF_UNSET_UINT;
    xcf->account_lockout = NGX_CONF_UNSET_MSEC;
    xcf->max_sessions_per_user = NGX_CONF_UNSET_UINT;
    xcf->allow_plaintext_auth = NGX_CONF_UNSET;
    xcf->resource_conflict = NGX_CONF_UNSET_UINT;
    xcf->registry_size = NGX_CONF_UNSET_SIZE;
    xcf->audit_fsync = NGX_CONF_UNSET_UINT;
    xcf->audit_fsync_interval = NGX_CONF_UNSET_MSEC;
    xcf->audit_cp_records = NGX_CONF_UNSET_UINT;
    xcf->audit_cp_interval = NGX_CONF_UNSET_MSEC;
    xcf->audit_pending_size = NGX_CONF_UNSET_SIZE;
    xcf->db_port = NGX_CONF_UNSET_UINT;
    xcf->db_timeout = NGX_CONF_UNSET_MSEC;
    xcf->ship_batch = NGX_CONF_UNSET_UINT;
    xcf->ship_interval = NGX_CONF_UNSET_MSEC;
    xcf->db_request_timeout = NGX_CONF_UNSET_MSEC;
    xcf->mam_max_page = NGX_CONF_UNSET_UINT;
    xcf->sm_resume_timeout = NGX_CONF_UNSET_MSEC;
    xcf->sm_forward_timeout = NGX_CONF_UNSET_MSEC;
    xcf->sm_max_unacked = NGX_CONF_UNSET_UINT;
    xcf->muc_max_occupants = NGX_CONF_UNSET_UINT;
    xcf->muc_max_rooms = NGX_CONF_UNSET_UINT;
    xcf->muc_rate = NGX_CONF_UNSET_UINT;
    xcf->muc_history = NGX_CONF_UNSET_UINT;
    xcf->muc_queue = NGX_CONF_UNSET_UINT;
    xcf->roster_max_items = NGX_CONF_UNSET_UINT;
    xcf->offline_quota = NGX_CONF_UNSET_UINT;
    xcf->pep_max_item_size = NGX_CONF_UNSET_SIZE;
    xcf->vcard_max_size = NGX_CONF_UNSET_SIZE;
    xcf->pep_max_items = NGX_CONF_UNSET_UINT;
    xcf->pep_max_node_size = NGX_CONF_UNSET_SIZE;
    xcf->pep_max_nodes = NGX_CONF_UNSET_UINT;
    xcf->private_max_size = NGX_CONF_UNSET_SIZE;
    xcf->csi_max_held = NGX_CONF_UNSET_UINT;
    xcf->realtime_priority = NGX_CONF_UNSET_UINT;
    xcf->csi_max_held_size = NGX_CONF_UNSET_SIZE;
    xcf->blocklist_max = NGX_CONF_UNSET_UINT;
    xcf->bosh_max_wait = NGX_CONF_UNSET_MSEC;
    xcf->bosh_max_inactivity = NGX_CONF_UNSET_MSEC;
    xcf->bosh_max_requests = NGX_CONF_UNSET_UINT;
    xcf->bosh_max_body = NGX_CONF_UNSET_SIZE;

    return xcf;
}


/* defaults, limits that depend on each other, and the registry zone */
char *
ngx_xmpp_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    ngx_shm_zone_t  *zone;

    ngx_conf_init_msec_value(xcf->ldap_timeout, 5000);
    ngx_conf_init_value(xcf->ldap_page_size, CDIR_PAGE_SIZE);
    ngx_conf_init_uint_value(xcf->ldap_pool_size, 4);
    ngx_conf_init_value(xcf->ldap_starttls, 0);
    ngx_conf_init_value(xcf->ldap_tls_verify, 1);
    ngx_conf_init_uint_value(xcf->ldap_group_mode, CDIR_GROUPS_MEMBER);
    ngx_conf_init_uint_value(xcf->ldap_group_depth, 4);
    ngx_conf_init_uint_value(xcf->ldap_max_groups, 4096);
    ngx_conf_init_msec_value(xcf->ldap_revalidate, 300000);
    ngx_conf_init_ptr_value(xcf->ldap_shared_groups, NULL);
    ngx_conf_init_msec_value(xcf->ldap_refresh, 600000);
    ngx_conf_init_uint_value(xcf->ldap_shared_max, 5000);
    ngx_conf_init_uint_value(xcf->ldap_search_max, 50);
    ngx_conf_init_uint_value(xcf->ldap_outage, CDIR_OUTAGE_REFUSE);
    ngx_conf_init_value(xcf->ldap_cache_ttl, 3600);
    ngx_conf_init_size_value(xcf->max_stanza_size, 65536);
    ngx_conf_init_size_value(xcf->max_stanza_size_preauth, 8192);
    ngx_conf_init_uint_value(xcf->max_depth, 32);
    ngx_conf_init_uint_value(xcf->max_attrs, 64);
    ngx_conf_init_size_value(xcf->ws_max_message, 262144);
    ngx_conf_init_size_value(xcf->max_output, 1048576);
    ngx_conf_init_msec_value(xcf->auth_timeout, 30000);
    ngx_conf_init_msec_value(xcf->idle_timeout, 600000);
    ngx_conf_init_msec_value(xcf->close_timeout, 5000);
    ngx_conf_init_uint_value(xcf->max_auth_failures, 3);
    ngx_conf_init_uint_value(xcf->max_address_failures, 20);
    ngx_conf_init_msec_value(xcf->address_lockout, 10 * 60 * 1000);
    ngx_conf_init_uint_value(xcf->max_account_failures, 0);
    ngx_conf_init_msec_value(xcf->account_lockout, 15 * 60 * 1000);
    ngx_conf_init_uint_value(xcf->max_sessions_per_user, 16);
    ngx_conf_init_value(xcf->allow_plaintext_auth, 0);
    ngx_conf_init_uint_value(xcf->resource_conflict,
                             NGX_XMPP_CONFLICT_KICK_OLD);
    ngx_conf_init_size_value(xcf->registry_size, 32 * 1024 * 1024);
    ngx_conf_init_uint_value(xcf->audit_fsync, NGX_XMPP_FSYNC_ALWAYS);
    ngx_conf_init_msec_value(xcf->audit_fsync_interval, 1000);
    ngx_conf_init_uint_value(xcf->audit_cp_records, 10000);
    ngx_conf_init_msec_value(xcf->audit_cp_interval, 15 * 60 * 1000);
    ngx_conf_init_size_value(xcf->audit_pending_size, 8 * 1024 * 1024);
    ngx_conf_init_uint_value(xcf->db_port, 3306);
    ngx_conf_init_msec_value(xcf->db_timeout, 5000);
    ngx_conf_init_uint_value(xcf->ship_batch, 1000);
    ngx_conf_init_msec_value(xcf->ship_interval, 20);
    ngx_conf_init_msec_value(xcf->db_request_timeout, 10000);
    ngx_conf_init_uint_value(xcf->mam_max_page, 250);
    ngx_conf_init_msec_value(xcf->sm_resume_timeout, 300000);
    ngx_conf_init_msec_value(xcf->sm_forward_timeout, 30000);
    ngx_conf_init_uint_value(xcf->sm_max_unacked, 1000);
    ngx_conf_init_uint_value(xcf->muc_max_occupants, 1000);
    ngx_conf_init_uint_value(xcf->muc_max_rooms, 10000);
    ngx_conf_init_uint_value(xcf->muc_rate, 200);
    ngx_conf_init_uint_value(xcf->muc_history, 20);
    ngx_conf_init_uint_value(xcf->muc_queue, 1024);

    if (xcf->muc_history > 1000 || xcf->muc_rate == 0
        || xcf->muc_queue == 0 || xcf->muc_max_occupants == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_muc_history\" must be at most 1000, "
                           "and the other conclave_muc_* limits above 0");
        return NGX_CONF_ERROR;
    }

    if (xcf->muc_domain.len) {
        ngx_xmpp_ascii_lower(xcf->muc_domain.data, xcf->muc_domain.len);

        if (xcf->domain.len == xcf->muc_domain.len
            && ngx_strncmp(xcf->domain.data, xcf->muc_domain.data,
                           xcf->domain.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"conclave_muc_domain\" must differ from "
                               "\"conclave_domain\"");
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_init_uint_value(xcf->roster_max_items, 1000);
    ngx_conf_init_uint_value(xcf->offline_quota, 1000);
    ngx_conf_init_size_value(xcf->pep_max_item_size, 65536);
    ngx_conf_init_size_value(xcf->vcard_max_size, 8192);
    ngx_conf_init_uint_value(xcf->pep_max_items, 256);
    ngx_conf_init_size_value(xcf->pep_max_node_size, 1024 * 1024);
    ngx_conf_init_uint_value(xcf->pep_max_nodes, 64);
    ngx_conf_init_size_value(xcf->private_max_size, 65536);

    if (xcf->vcard_max_size > 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_vcard_max_size\" must be at most 1m");
        return NGX_CONF_ERROR;
    }

    if (xcf->pep_max_items == 0 || xcf->pep_max_nodes == 0
        || xcf->pep_max_items > 10000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_pep_max_items\" must be 1..10000 "
                           "and \"conclave_pep_max_nodes\" at least 1");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(xcf->csi_max_held, 256);
    ngx_conf_init_uint_value(xcf->realtime_priority, 0);
    ngx_conf_init_size_value(xcf->csi_max_held_size, 262144);
    ngx_conf_init_uint_value(xcf->blocklist_max, 1000);

    if (xcf->csi_max_held < 1 || xcf->blocklist_max < 1
        || xcf->blocklist_max > 100000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_csi_max_held\" must be at least 1 "
                           "and \"conclave_blocklist_max\" between 1 and "
                           "100000");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_msec_value(xcf->bosh_max_wait, 60000);
    ngx_conf_init_msec_value(xcf->bosh_max_inactivity, 60000);
    ngx_conf_init_uint_value(xcf->bosh_max_requests, 2);
    ngx_conf_init_size_value(xcf->bosh_max_body, 262144);

    /* XEP-0124 section 7.1: requests must exceed hold (which is 1) */
    if (xcf->bosh_max_requests < 2 || xcf->bosh_max_requests > 8) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_bosh_max_requests\" must be "
                           "between 2 and 8");
        return NGX_CONF_ERROR;
    }

    if (xcf->bosh_max_wait < 1000 || xcf->bosh_max_inactivity < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the BOSH wait and inactivity limits must be "
                           "at least 1s");
        return NGX_CONF_ERROR;
    }

    /* the page query's LIMIT and its buffers grow with it */
    if (xcf->mam_max_page < 1 || xcf->mam_max_page > 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_mam_max_page\" must be "
                           "between 1 and 1000");
        return NGX_CONF_ERROR;
    }

    if (xcf->sm_resume_timeout < 1000 || xcf->sm_max_unacked < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_sm_resume_timeout\" must be at "
                           "least 1s and \"conclave_sm_max_unacked\" "
                           "at least 1");
        return NGX_CONF_ERROR;
    }

    /* a moved session forwards what was routed before the move */
    if (xcf->sm_forward_timeout < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_sm_forward_timeout\" must be at "
                           "least 1s");
        return NGX_CONF_ERROR;
    }

    if (xcf->thread_pool_name.len == 0) {
        ngx_str_set(&xcf->thread_pool_name, "default");
    }

    if (xcf->domain.len == 0) {
        /* the module is loaded but not used */
        return NGX_CONF_OK;
    }

    /* a whole stanza must fit in one inter-worker datagram */
    if (xcf->max_stanza_size > 192 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_max_stanza_size\" must not exceed "
                           "192k");
        return NGX_CONF_ERROR;
    }

    if (xcf->max_stanza_size_preauth > xcf->max_stanza_size) {
        xcf->max_stanza_size_preauth = xcf->max_stanza_size;
    }

    if (xcf->ldap_uri.len == 0 || xcf->ldap_base.len == 0
        || xcf->ldap_user_filter.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_domain\" needs \"conclave_ldap_uri\", "
                           "\"conclave_ldap_base\" and "
                           "\"conclave_ldap_user_filter\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_strlcasestrn(xcf->ldap_user_filter.data,
                         xcf->ldap_user_filter.data
                         + xcf->ldap_user_filter.len,
                         (u_char *) "%u", 1)
        == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_ldap_user_filter\" must contain %%u");
        return NGX_CONF_ERROR;
    }

    if (xcf->ldap_page_size < 0 || xcf->ldap_page_size > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_ldap_page_size\" must be 0..100000");
        return NGX_CONF_ERROR;
    }

    if (xcf->ldap_search_max == 0 || xcf->ldap_search_max > 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_ldap_search_max\" must be 1..1000");
        return NGX_CONF_ERROR;
    }

    if (xcf->ldap_group_depth > 32 || xcf->ldap_max_groups == 0
        || xcf->ldap_max_groups > 1000000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_ldap_group_depth\" must be 0..32 and "
                           "\"conclave_ldap_max_groups\" 1..1000000");
        return NGX_CONF_ERROR;
    }

    if (xcf->ldap_outage == CDIR_OUTAGE_CACHE && xcf->ldap_cache_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_ldap_outage cache\" needs a positive "
                           "\"conclave_ldap_cache_ttl\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_xmpp_vcard_conf(cf, xcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    xcf->thread_pool = ngx_thread_pool_add(cf, &xcf->thread_pool_name);
    if (xcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    /*
     * The database gets its own pool where the configuration names one
     * ("thread_pool conclave_db threads=8;"): with a shared pool a
     * frozen directory holding every thread would stall MariaDB work too.
     */
    if (xcf->db_thread_pool_name.len == 0) {
        xcf->db_thread_pool_name = xcf->thread_pool_name;
    }

    xcf->db_thread_pool = ngx_thread_pool_add(cf, &xcf->db_thread_pool_name);
    if (xcf->db_thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    zone = ngx_xmpp_registry_add_zone(cf, xcf->registry_size);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    xcf->registry_zone = zone;

    if (ngx_xmpp_metrics_add_zone(cf, xcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (xcf->max_address_failures && xcf->address_lockout < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_address_lockout\" must be 1s or "
                           "more");
        return NGX_CONF_ERROR;
    }

    if (xcf->max_account_failures && xcf->account_lockout < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_account_lockout\" must be 1s or "
                           "more");
        return NGX_CONF_ERROR;
    }

    if (ngx_xmpp_auth_zone_add(cf, xcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (xcf->audit_cp_records == 0 || xcf->ship_batch == 0
        || xcf->audit_pending_size < 2 * (xcf->max_stanza_size + 8192))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_audit_checkpoint_records\" and "
                           "\"conclave_audit_ship_batch\" must be positive, "
                           "and \"conclave_audit_pending_size\" at least "
                           "twice \"conclave_max_stanza_size\" + 8k");
        return NGX_CONF_ERROR;
    }

    return ngx_xmpp_audit_conf_init(cf, xcf);
}


/*
 * A secret read from a file by the master, so the file can be
 * root-only: cmd->offset names the ngx_str_t it fills.
 */
char *
ngx_xmpp_conf_password_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_str_t  *value, path, *field;
    u_char      buf[1024];

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &path);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));
    ngx_close_file(fd);

    if (n == -1 || n == sizeof(buf)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read the password from \"%V\"", &path);
        return NGX_CONF_ERROR;
    }

    /* one line; the trailing newline is not part of the password */
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }

    field->data = ngx_pnalloc(cf->pool, n + 1);
    if (field->data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(field->data, buf, n);
    field->data[n] = '\0';
    field->len = n;

    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_CONF_OK;
}


char *
ngx_xmpp_conf_conflict(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_xmpp_conf_t  *xcf = conf;

    ngx_str_t  *value;

    if (xcf->resource_conflict != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "kick_old") == 0) {
        xcf->resource_conflict = NGX_XMPP_CONFLICT_KICK_OLD;

    } else if (ngx_strcmp(value[1].data, "reject") == 0) {
        xcf->resource_conflict = NGX_XMPP_CONFLICT_REJECT;

    } else {
        return "must be \"kick_old\" or \"reject\"";
    }

    return NGX_CONF_OK;
}


/* a NUL-terminated copy for the C libraries; NULL for an empty string */
const char *
ngx_xmpp_cstr(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p;

    if (s->len == 0) {
        return NULL;
    }

    p = ngx_pnalloc(pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_cpymem(p, s->data, s->len) = '\0';

    return (const char *) p;
}


/*
 * The directory settings every sign-in path uses: the XMPP sign-in's
 * handle and each console role's (ngx_xmpp_admin_auth.c), so that TLS,
 * failover, the login attribute, nested groups and timeouts cannot
 * differ between them.  Strings are copied into pool.
 */
void
ngx_xmpp_dir_config(ngx_pool_t *pool, ngx_xmpp_conf_t *xcf,
    cdir_config_t *dc)
{
    ngx_uint_t  i;

    ngx_memzero(dc, sizeof(cdir_config_t));

    dc->uri = ngx_xmpp_cstr(pool, &xcf->ldap_uri);
    dc->bind_dn = ngx_xmpp_cstr(pool, &xcf->ldap_bind_dn);
    dc->bind_pw = ngx_xmpp_cstr(pool, &xcf->ldap_bind_password);
    dc->base = ngx_xmpp_cstr(pool, &xcf->ldap_base);
    dc->user_filter = ngx_xmpp_cstr(pool, &xcf->ldap_user_filter);
    dc->group_dn = ngx_xmpp_cstr(pool, &xcf->ldap_group);
    dc->timeout_ms = (int) xcf->ldap_timeout;
    dc->page_size = xcf->ldap_page_size ? (int) xcf->ldap_page_size : -1;
    dc->pool_size = (int) xcf->ldap_pool_size;
    dc->starttls = (int) xcf->ldap_starttls;
    dc->ca_file = ngx_xmpp_cstr(pool, &xcf->ldap_ca_file);
    dc->tls_insecure = !xcf->ldap_tls_verify;
    dc->name_attr = ngx_xmpp_cstr(pool, &xcf->ldap_name_attr);
    dc->group_mode = (int) xcf->ldap_group_mode;
    dc->group_depth = (int) xcf->ldap_group_depth;
    dc->max_groups = (int) xcf->ldap_max_groups;
    dc->group_base = ngx_xmpp_cstr(pool, &xcf->ldap_group_base);

    for (i = 1; i < CDIR_NROLES; i++) {
        dc->role_dn[i] = ngx_xmpp_cstr(pool, &xcf->ldap_role_group[i]);
    }

    /* the cache exists only to serve the outage policy */
    dc->outage = (int) xcf->ldap_outage;
    dc->cache_ttl = (xcf->ldap_outage == CDIR_OUTAGE_CACHE)
                    ? (int) xcf->ldap_cache_ttl : 0;

    for (i = 0; i < CDIR_VC_N; i++) {
        /* unset: the library's default; "none": "" */
        dc->vcard_attr[i] = xcf->ldap_vcard_attr[i].data == NULL ? NULL
                            : xcf->ldap_vcard_attr[i].len == 0 ? ""
                            : ngx_xmpp_cstr(pool, &xcf->ldap_vcard_attr[i]);
    }

    dc->photo_max = xcf->ldap_photo_max;
}


ngx_int_t
ngx_xmpp_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    char            err[256];
    cdir_config_t   dc;

    ngx_xmpp_dir_config(cycle->pool, xcf, &dc);

    err[0] = '\0';

    xcf->dir = cdir_create(&dc, err, sizeof(err));
    if (xcf->dir == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "xmpp: directory set-up failed: %s", err);
        return NGX_ERROR;
    }

    /* entries of workers that crashed before this one started */
    ngx_xmpp_registry_purge_dead(xcf);

    if (ngx_xmpp_ipc_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_xmpp_audit_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_xmpp_db_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_xmpp_metrics_init_worker(xcf);

    if (ngx_xmpp_rt_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_xmpp_muc_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_xmpp_dir_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_xmpp_worker_conf = xcf;

    /* timer events are logged as connections: give it a dummy one */
    ngx_xmpp_dumb.fd = (ngx_socket_t) -1;
    ngx_xmpp_housekeeping_ev.data = &ngx_xmpp_dumb;
    ngx_xmpp_housekeeping_ev.handler = ngx_xmpp_housekeeping;
    ngx_xmpp_housekeeping_ev.log = cycle->log;
    ngx_xmpp_housekeeping_ev.cancelable = 1;
    ngx_add_timer(&ngx_xmpp_housekeeping_ev, NGX_XMPP_HOUSEKEEPING);

    return NGX_OK;
}


void
ngx_xmpp_exit_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    if (xcf->registry_zone) {
        ngx_xmpp_registry_purge_pid(xcf, ngx_pid);
    }

    /*
     * nginx has already joined the thread pools (their module exits
     * first): from here on a database request must not be posted, so
     * the adapter goes first and ngx_xmpp_db_create() answers NULL to
     * what the sessions ending below would store.
     */
    ngx_xmpp_db_exit_worker(cycle);

    /* the rooms' occupants leave on the record, before the journal ends */
    ngx_xmpp_muc_exit_worker(cycle);

    ngx_xmpp_dir_exit_worker(cycle);

    /* parked XEP-0198 sessions end now; their stanzas go elsewhere */
    ngx_xmpp_sm_exit_worker();

    /* unblocks waiting for other workers: their presence is not sent */
    ngx_xmpp_blockpres_exit_worker();

    /* while the IPC socket is open: durable messages go to others */
    ngx_xmpp_audit_exit_worker(cycle);

    /* what the last turn corked is sent */
    ngx_xmpp_session_exit_worker();

    /* requests held for another worker's BOSH sessions are answered */
    ngx_xmpp_bosh_exit_worker();

    ngx_xmpp_ipc_exit_worker(cycle);
    ngx_xmpp_router_exit_worker();
    ngx_xmpp_rt_exit_worker();
    ngx_xmpp_metrics_exit_worker();

    if (xcf->dir) {
        cdir_destroy(xcf->dir);
        xcf->dir = NULL;
    }
}


/*
 * After a burst (a wave of sign-ins: their parsers, write buffers and
 * database requests, the thread pool's LDAP replies; the shipper's
 * batches) what was freed stays in malloc's free lists and arenas, and
 * the worker's RSS stays at the burst's height: glibc gives back only
 * the top of a heap.  When the parser cache has just shed what a burst
 * left, or the shipper the buffers of a backlog, the burst is over, and
 * malloc_trim() returns the free pages of every arena (the event
 * loop's and its threads') to the kernel.  It walks the free lists, no
 * I/O: 70-430 us after 1,000 sign-ins (docs/benchmarks.md, session 22),
 * once or twice per burst.
 */
static void
ngx_xmpp_return_memory(void)
{
    ngx_uint_t  parsers, shipper;

    parsers = ngx_xmpp_parser_trim();
    shipper = ngx_xmpp_audit_released();

    if (parsers < NGX_XMPP_TRIM_PARSERS && !shipper) {
        return;
    }

#if (NGX_LINUX && defined __GLIBC__)
    (void) malloc_trim(0);
#endif
}


/*
 * nginx has no hook for the start of a graceful shutdown; the timer
 * notices ngx_exiting, and sessions then end with <system-shutdown/>
 * instead of being cut when the worker exits.  The timer is
 * cancelable, so it never delays the exit itself.
 */
static void
ngx_xmpp_housekeeping(ngx_event_t *ev)
{
    if ((ngx_exiting || ngx_quit || ngx_terminate)
        && !ngx_xmpp_shutting_down)
    {
        ngx_xmpp_shutting_down = 1;
        ngx_xmpp_session_shutdown_all("system-shutdown");
    }

    ngx_xmpp_audit_tick(ev->log);
    ngx_xmpp_metrics_sample();
    ngx_xmpp_return_memory();

    if (++ngx_xmpp_housekeeping_ticks % NGX_XMPP_PURGE_EVERY == 0) {
        ngx_xmpp_registry_purge_dead(ngx_xmpp_worker_conf);
    }

    ngx_add_timer(ev, NGX_XMPP_HOUSEKEEPING);
}
