
/*
 * Conclave's http module: the directives, and the content handlers of
 * conclave_websocket (XMPP over WebSocket), conclave_bosh (XEP-0206),
 * conclave_status (the session registry as JSON), conclave_host_meta
 * (XEP-0156), conclave_metrics (Prometheus), conclave_health and
 * conclave_admin (the admin console).  The XMPP core lives in
 * ngx_xmpp_*.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_xmpp.h"
#include "ngx_xmpp_http.h"


typedef struct {
    ngx_uint_t   handler;
} ngx_http_conclave_loc_conf_t;


#define NGX_HTTP_CONCLAVE_NONE       0
#define NGX_HTTP_CONCLAVE_WEBSOCKET  1
#define NGX_HTTP_CONCLAVE_STATUS     2
#define NGX_HTTP_CONCLAVE_HOST_META  3
#define NGX_HTTP_CONCLAVE_BOSH       4
#define NGX_HTTP_CONCLAVE_METRICS    5
#define NGX_HTTP_CONCLAVE_HEALTH     6
#define NGX_HTTP_CONCLAVE_ADMIN      7


ngx_int_t ngx_xmpp_ws_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_bosh_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_hostmeta_handler(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_admin_handler(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf);

static void *ngx_http_conclave_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_conclave_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_conclave_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_conclave_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_conclave_location(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_conclave_handler(ngx_http_request_t *r);
static char *ngx_xmpp_conf_set_realtime(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_conclave_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_conclave_init_process(ngx_cycle_t *cycle);
static void ngx_http_conclave_exit_process(ngx_cycle_t *cycle);


#define NGX_XMPP_MAIN  (NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1)
#define NGX_XMPP_OFF(field)  offsetof(ngx_xmpp_conf_t, field)


static ngx_command_t  ngx_http_conclave_commands[] = {

    { ngx_string("conclave_domain"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(domain), NULL },

    { ngx_string("conclave_ldap_uri"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_uri), NULL },

    { ngx_string("conclave_ldap_bind_dn"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_bind_dn), NULL },

    { ngx_string("conclave_ldap_bind_password"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_bind_password), NULL },

    { ngx_string("conclave_ldap_bind_password_file"), NGX_XMPP_MAIN,
      ngx_xmpp_conf_password_file, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_bind_password), NULL },

    { ngx_string("conclave_ldap_base"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_base), NULL },

    { ngx_string("conclave_ldap_user_filter"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_user_filter), NULL },

    { ngx_string("conclave_ldap_group"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_group), NULL },

    { ngx_string("conclave_ldap_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_timeout), NULL },

    { ngx_string("conclave_ldap_pool_size"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_pool_size), NULL },

    { ngx_string("conclave_ldap_starttls"), NGX_XMPP_MAIN,
      ngx_conf_set_flag_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_starttls), NULL },

    { ngx_string("conclave_ldap_ca_file"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_ca_file), NULL },

    { ngx_string("conclave_ldap_tls_verify"), NGX_XMPP_MAIN,
      ngx_conf_set_flag_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_tls_verify), NULL },

    { ngx_string("conclave_ldap_name_attribute"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_name_attr), NULL },

    { ngx_string("conclave_ldap_group_mode"), NGX_XMPP_MAIN,
      ngx_conf_set_enum_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_group_mode), ngx_xmpp_dir_group_modes },

    { ngx_string("conclave_ldap_group_depth"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_group_depth), NULL },

    { ngx_string("conclave_ldap_max_groups"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_max_groups), NULL },

    { ngx_string("conclave_ldap_group_base"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_group_base), NULL },

    { ngx_string("conclave_ldap_admin_group"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_role_group[1]), NULL },

    { ngx_string("conclave_ldap_compliance_group"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_role_group[2]), NULL },

    { ngx_string("conclave_ldap_auditor_group"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_role_group[3]), NULL },

    { ngx_string("conclave_ldap_revalidate"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_revalidate), NULL },

    { ngx_string("conclave_ldap_shared_group"), NGX_XMPP_MAIN,
      ngx_conf_set_str_array_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_shared_groups), NULL },

    { ngx_string("conclave_ldap_refresh"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_refresh), NULL },

    { ngx_string("conclave_ldap_shared_group_max"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_shared_max), NULL },

    { ngx_string("conclave_ldap_page_size"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_page_size), NULL },

    { ngx_string("conclave_ldap_search_max"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_search_max), NULL },

    { ngx_string("conclave_ldap_outage"), NGX_XMPP_MAIN,
      ngx_conf_set_enum_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_outage), ngx_xmpp_dir_outage_policies },

    { ngx_string("conclave_ldap_cache_ttl"), NGX_XMPP_MAIN,
      ngx_conf_set_sec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_cache_ttl), NULL },

    { ngx_string("conclave_ldap_vcard_attribute"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_xmpp_vcard_attr, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },

    { ngx_string("conclave_ldap_photo_max"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_photo_max), NULL },

    { ngx_string("conclave_ldap_vcard_cache_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_vcard_cache_size), NULL },

    { ngx_string("conclave_ldap_vcard_cache_ttl"), NGX_XMPP_MAIN,
      ngx_conf_set_sec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ldap_vcard_cache_ttl), NULL },

    { ngx_string("conclave_thread_pool"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(thread_pool_name), NULL },

    { ngx_string("conclave_max_stanza_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_stanza_size), NULL },

    { ngx_string("conclave_max_stanza_size_preauth"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_stanza_size_preauth), NULL },

    { ngx_string("conclave_max_depth"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_depth), NULL },

    { ngx_string("conclave_max_attributes"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_attrs), NULL },

    { ngx_string("conclave_websocket_max_message"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ws_max_message), NULL },

    { ngx_string("conclave_max_output"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_output), NULL },

    { ngx_string("conclave_auth_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(auth_timeout), NULL },

    { ngx_string("conclave_idle_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(idle_timeout), NULL },

    { ngx_string("conclave_close_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(close_timeout), NULL },

    { ngx_string("conclave_max_auth_failures"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_auth_failures), NULL },

    { ngx_string("conclave_max_address_failures"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_address_failures), NULL },

    { ngx_string("conclave_address_lockout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(address_lockout), NULL },

    { ngx_string("conclave_max_account_failures"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_account_failures), NULL },

    { ngx_string("conclave_account_lockout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(account_lockout), NULL },

    { ngx_string("conclave_max_sessions_per_user"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(max_sessions_per_user), NULL },

    { ngx_string("conclave_allow_plaintext_auth"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(allow_plaintext_auth), NULL },

    { ngx_string("conclave_resource_conflict"), NGX_XMPP_MAIN,
      ngx_xmpp_conf_conflict, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },

    { ngx_string("conclave_registry_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(registry_size), NULL },

    { ngx_string("conclave_audit_dir"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_dir), NULL },

    { ngx_string("conclave_audit_node"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_node), NULL },

    { ngx_string("conclave_audit_key"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_key), NULL },

    { ngx_string("conclave_audit_fsync"), NGX_XMPP_MAIN,
      ngx_conf_set_enum_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_fsync), ngx_xmpp_audit_fsync_policies },

    { ngx_string("conclave_audit_fsync_interval"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_fsync_interval), NULL },

    { ngx_string("conclave_audit_checkpoint_records"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_cp_records), NULL },

    { ngx_string("conclave_audit_checkpoint_interval"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_cp_interval), NULL },

    { ngx_string("conclave_audit_pending_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(audit_pending_size), NULL },

    { ngx_string("conclave_audit_db_host"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_host), NULL },

    { ngx_string("conclave_audit_db_port"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_port), NULL },

    { ngx_string("conclave_audit_db_socket"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_socket), NULL },

    { ngx_string("conclave_audit_db_user"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_user), NULL },

    { ngx_string("conclave_audit_db_password"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_password), NULL },

    { ngx_string("conclave_audit_db_password_file"), NGX_XMPP_MAIN,
      ngx_xmpp_conf_password_file, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_password), NULL },

    { ngx_string("conclave_audit_db_name"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_name), NULL },

    { ngx_string("conclave_audit_db_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_timeout), NULL },

    { ngx_string("conclave_db_thread_pool"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_thread_pool_name), NULL },

    { ngx_string("conclave_db_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(db_request_timeout), NULL },

    { ngx_string("conclave_mam_max_page"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(mam_max_page), NULL },

    { ngx_string("conclave_muc_domain"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(muc_domain), NULL },

    { ngx_string("conclave_muc_max_occupants"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(muc_max_occupants), NULL },

    { ngx_string("conclave_muc_max_rooms"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(muc_max_rooms), NULL },

    { ngx_string("conclave_muc_rate"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(muc_rate), NULL },

    { ngx_string("conclave_muc_history"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(muc_history), NULL },

    { ngx_string("conclave_muc_queue"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(muc_queue), NULL },

    { ngx_string("conclave_roster_max_items"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(roster_max_items), NULL },

    { ngx_string("conclave_offline_quota"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(offline_quota), NULL },

    { ngx_string("conclave_vcard_max_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(vcard_max_size), NULL },

    { ngx_string("conclave_pep_max_item_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(pep_max_item_size), NULL },

    { ngx_string("conclave_pep_max_items"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(pep_max_items), NULL },

    { ngx_string("conclave_pep_max_node_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(pep_max_node_size), NULL },

    { ngx_string("conclave_pep_max_nodes"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(pep_max_nodes), NULL },

    { ngx_string("conclave_private_max_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(private_max_size), NULL },
    { ngx_string("conclave_realtime_priority"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_xmpp_conf_set_realtime, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(realtime_priority), NULL },

    { ngx_string("conclave_csi_max_held"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(csi_max_held), NULL },

    { ngx_string("conclave_csi_max_held_size"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(csi_max_held_size), NULL },

    { ngx_string("conclave_blocklist_max"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(blocklist_max), NULL },

    { ngx_string("conclave_sm_resume_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(sm_resume_timeout), NULL },

    { ngx_string("conclave_sm_forward_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(sm_forward_timeout), NULL },

    { ngx_string("conclave_sm_max_unacked"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(sm_max_unacked), NULL },

    { ngx_string("conclave_audit_ship_batch"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ship_batch), NULL },

    { ngx_string("conclave_audit_ship_interval"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(ship_interval), NULL },

    { ngx_string("conclave_websocket_url"), NGX_XMPP_MAIN,
      ngx_xmpp_hostmeta_conf_ws_url, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(websocket_url), NULL },

    { ngx_string("conclave_bosh_url"), NGX_XMPP_MAIN,
      ngx_xmpp_hostmeta_conf_bosh_url, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(bosh_url), NULL },

    { ngx_string("conclave_bosh_max_wait"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(bosh_max_wait), NULL },

    { ngx_string("conclave_bosh_max_inactivity"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(bosh_max_inactivity), NULL },

    { ngx_string("conclave_bosh_max_requests"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(bosh_max_requests), NULL },

    { ngx_string("conclave_bosh_max_body"), NGX_XMPP_MAIN,
      ngx_conf_set_size_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(bosh_max_body), NULL },

    { ngx_string("conclave_bosh_cors_origin"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(bosh_cors_origin), NULL },

    { ngx_string("conclave_admin_role_group"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_xmpp_admin_conf_role, NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL },

    { ngx_string("conclave_admin_root"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_root), NULL },

    { ngx_string("conclave_admin_key_file"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_key_file), NULL },

    { ngx_string("conclave_admin_idle_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_idle_timeout), NULL },

    { ngx_string("conclave_admin_session_timeout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_session_timeout), NULL },

    { ngx_string("conclave_admin_max_failures"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_max_failures), NULL },

    { ngx_string("conclave_admin_lockout"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_lockout), NULL },

    { ngx_string("conclave_admin_export_dir"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_export_dir), NULL },

    { ngx_string("conclave_admin_export_max"), NGX_XMPP_MAIN,
      ngx_conf_set_num_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_export_max), NULL },

    { ngx_string("conclave_admin_export_keep"), NGX_XMPP_MAIN,
      ngx_conf_set_sec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_export_keep), NULL },

    { ngx_string("conclave_admin_forged_summary"), NGX_XMPP_MAIN,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_forged_summary), NULL },

    { ngx_string("conclave_admin_export_thread_pool"), NGX_XMPP_MAIN,
      ngx_conf_set_str_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      NGX_XMPP_OFF(admin_export_pool_name), NULL },

    { ngx_string("conclave_admin"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_ADMIN },

    { ngx_string("conclave_bosh"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_BOSH },

    { ngx_string("conclave_websocket"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_WEBSOCKET },

    { ngx_string("conclave_status"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_STATUS },

    { ngx_string("conclave_host_meta"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_HOST_META },

    { ngx_string("conclave_metrics"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_METRICS },

    { ngx_string("conclave_health"), NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_conclave_location, NGX_HTTP_LOC_CONF_OFFSET, 0,
      (void *) NGX_HTTP_CONCLAVE_HEALTH },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_conclave_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_conclave_create_main_conf,    /* create main configuration */
    ngx_http_conclave_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_conclave_create_loc_conf,     /* create location configuration */
    ngx_http_conclave_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_conclave_module = {
    NGX_MODULE_V1,
    &ngx_http_conclave_module_ctx,         /* module context */
    ngx_http_conclave_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_conclave_init_module,         /* init module */
    ngx_http_conclave_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_conclave_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_conclave_create_main_conf(ngx_conf_t *cf)
{
    ngx_xmpp_conf_t  *xcf;

    xcf = ngx_xmpp_conf_create(cf);
    if (xcf == NULL) {
        return NULL;
    }

    ngx_xmpp_admin_conf_create(xcf);

    return xcf;
}


static char *
ngx_http_conclave_init_main_conf(ngx_conf_t *cf, void *conf)
{
    char  *rc;

    rc = ngx_xmpp_conf_init(cf, conf);
    if (rc != NGX_CONF_OK) {
        return rc;
    }

    return ngx_xmpp_admin_conf_init(cf, conf);
}


static void *
ngx_http_conclave_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_conclave_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_conclave_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->handler = NGX_CONF_UNSET_UINT;

    return lcf;
}


static char *
ngx_http_conclave_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_conclave_loc_conf_t *prev = parent;
    ngx_http_conclave_loc_conf_t *conf = child;

    ngx_xmpp_conf_t           *xcf;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_uint_value(conf->handler, prev->handler,
                              NGX_HTTP_CONCLAVE_NONE);

    if (conf->handler != NGX_HTTP_CONCLAVE_BOSH) {
        return NGX_CONF_OK;
    }

    /*
     * A BOSH body larger than client_body_buffer_size goes to a temp
     * file, written and read back on the event loop.  Every body we
     * take fits conclave_bosh_max_body, so the buffer is made that large
     * (nginx allocates only what Content-Length asks for): no body ever
     * touches the disk.  The core module's location merge has run.
     */
    xcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_conclave_module);
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->client_body_buffer_size < xcf->bosh_max_body) {
        clcf->client_body_buffer_size = xcf->bosh_max_body;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_conclave_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_conclave_loc_conf_t *lcf = conf;

    ngx_xmpp_conf_t           *xcf;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->handler != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    xcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_conclave_module);

    if (xcf->domain.len == 0) {
        return "needs \"conclave_domain\" earlier in the http block";
    }

    lcf->handler = (ngx_uint_t) cmd->post;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_conclave_handler;

    /* host-meta names the first literal location of each transport */
    if (clcf->named
#if (NGX_PCRE)
        || clcf->regex
#endif
       )
    {
        return NGX_CONF_OK;
    }

    if (lcf->handler == NGX_HTTP_CONCLAVE_WEBSOCKET
        && xcf->websocket_location.len == 0)
    {
        xcf->websocket_location = clcf->name;

    } else if (lcf->handler == NGX_HTTP_CONCLAVE_BOSH
               && xcf->bosh_location.len == 0)
    {
        xcf->bosh_location = clcf->name;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_conclave_status(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    ngx_int_t   rc;
    ngx_buf_t  *b;
    ngx_str_t   json;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_xmpp_registry_json(xcf, r->pool, &json) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = json.data;
    b->last = json.data + json.len;
    b->memory = 1;
    b->last_buf = 1;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = json.len;

    return ngx_xmpp_http_send(r, b);
}


static ngx_int_t
ngx_http_conclave_handler(ngx_http_request_t *r)
{
    ngx_xmpp_conf_t               *xcf;
    ngx_http_conclave_loc_conf_t  *lcf;

    xcf = ngx_http_get_module_main_conf(r, ngx_http_conclave_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_conclave_module);

    if (lcf->handler == NGX_HTTP_CONCLAVE_STATUS) {
        return ngx_http_conclave_status(r, xcf);
    }

    if (lcf->handler == NGX_HTTP_CONCLAVE_HOST_META) {
        return ngx_xmpp_hostmeta_handler(r, xcf);
    }

    if (lcf->handler == NGX_HTTP_CONCLAVE_BOSH) {
        return ngx_xmpp_bosh_handler(r, xcf);
    }

    if (lcf->handler == NGX_HTTP_CONCLAVE_METRICS) {
        return ngx_xmpp_metrics_handler(r, xcf);
    }

    if (lcf->handler == NGX_HTTP_CONCLAVE_HEALTH) {
        return ngx_xmpp_metrics_health_handler(r, xcf);
    }

    if (lcf->handler == NGX_HTTP_CONCLAVE_ADMIN) {
        return ngx_xmpp_admin_handler(r, xcf);
    }

    return ngx_xmpp_ws_handler(r, xcf);
}


/*
 * The core's settings of a cycle, or NULL when the module is loaded but
 * unused; the http block holds them for every transport, the stream
 * module's included.
 */
ngx_xmpp_conf_t *
ngx_xmpp_cycle_conf(ngx_cycle_t *cycle)
{
    ngx_xmpp_conf_t  *xcf;

    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module) == NULL) {
        return NULL;
    }

    xcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_conclave_module);

    if (xcf == NULL || xcf->domain.len == 0) {
        return NULL;
    }

    return xcf;
}


/*
 * conclave_realtime_priority off | 1..99 [max_busy=N%]: sched(7)'s
 * SCHED_RR range, and how much of a CPU the event loop may use before
 * it goes back to SCHED_OTHER (1..100; automatic by default, ngx_xmpp_rt.c)
 */
static char *
ngx_xmpp_conf_set_realtime(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_xmpp_conf_t *xcf = conf;

    ngx_int_t   n, busy;
    ngx_str_t  *value, s;

    if (xcf->realtime_priority != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    busy = 0;

    if (cf->args->nelts == 3) {
        s = value[2];

        if (s.len > 10 && ngx_strncmp(s.data, "max_busy=", 9) == 0
            && s.data[s.len - 1] == '%')
        {
            busy = ngx_atoi(s.data + 9, s.len - 10);
        }

        if (busy < 1 || busy > 100) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"conclave_realtime_priority\": expected "
                               "\"max_busy=N%%\" with N from 1 to 100, not "
                               "\"%V\"", &s);
            return NGX_CONF_ERROR;
        }
    }

    xcf->realtime_max_busy = (ngx_uint_t) busy;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (busy) {
            return "takes no \"max_busy=\" with \"off\"";
        }

        xcf->realtime_priority = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 1 || n > 99) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_realtime_priority\" must be \"off\" "
                           "or a priority from 1 to 99, not \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    xcf->realtime_priority = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


/* in the master, before it forks the workers */
static ngx_int_t
ngx_http_conclave_init_module(ngx_cycle_t *cycle)
{
    ngx_xmpp_conf_t  *xcf;

    xcf = ngx_xmpp_cycle_conf(cycle);
    if (xcf) {
        ngx_xmpp_rt_init_master(cycle->log, xcf);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_conclave_init_process(ngx_cycle_t *cycle)
{
    ngx_xmpp_conf_t  *xcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    xcf = ngx_xmpp_cycle_conf(cycle);
    if (xcf == NULL) {
        return NGX_OK;
    }

    if (ngx_xmpp_init_worker(cycle, xcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_xmpp_admin_init_worker(cycle, xcf);
}


static void
ngx_http_conclave_exit_process(ngx_cycle_t *cycle)
{
    ngx_xmpp_conf_t  *xcf;

    xcf = ngx_xmpp_cycle_conf(cycle);
    if (xcf == NULL) {
        return;
    }

    ngx_xmpp_admin_exit_worker(cycle, xcf);
    ngx_xmpp_exit_worker(cycle, xcf);
}
