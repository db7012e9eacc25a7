
/*
 * Shipper benchmark (issue 3): the rate at which caud_shipper_ship()
 * moves journal records into MariaDB.  Prints figures, asserts nothing;
 * tests/bench/ship_bench.py starts the servers, writes the journals and
 * runs this.
 *
 *   ship_bench HOST PORT USER PASSWORD DATABASE DIR BATCH WRITER...
 *
 * Migrates the database (audit/schema), then ships each writer's
 * journal in DIR to its end, one shipper per writer, all writers at
 * once (one thread each, as nginx runs one shipper per worker).  Prints
 * one line: "records N seconds S rate R client_cpu C", C being this
 * process's user + system time.
 */


#define _GNU_SOURCE

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <mysql.h>

#include "caud.h"


#define WRITERS_MAX  64


typedef struct {
    caud_db_opts_t  *db;
    const char      *dir;
    size_t           batch;
    uint32_t         writer_id;
    int64_t          shipped;
    char             err[512];
} bench_job_t;


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void *
bench_ship(void *data)
{
    bench_job_t     *job = data;
    caud_shipper_t  *sh;

    sh = caud_shipper_new(job->db, job->dir, "bench", job->batch, job->err,
                          sizeof(job->err));
    if (sh == NULL) {
        job->shipped = -1;
        return NULL;
    }

    job->shipped = caud_shipper_ship(sh, job->writer_id, 0, job->err,
                                     sizeof(job->err));
    caud_shipper_free(sh);
    caud_db_thread_end();

    return NULL;
}


int
main(int argc, char **argv)
{
    int              i, n, rc;
    char             err[512];
    double           t0, t1, cpu;
    int64_t          total;
    pthread_t        tid[WRITERS_MAX];
    bench_job_t      job[WRITERS_MAX];
    struct rusage    ru;
    caud_db_opts_t   db;
    const char      *after;
    MYSQL           *conn;

    if (argc < 9 || argc - 8 > WRITERS_MAX) {
        fprintf(stderr, "usage: ship_bench HOST PORT USER PASSWORD "
                "DATABASE DIR BATCH WRITER...\n");
        return 2;
    }

    memset(&db, 0, sizeof(db));
    db.host = argv[1];
    db.port = atoi(argv[2]);
    db.user = argv[3];
    db.password = argv[4];
    db.database = argv[5];
    db.timeout_s = 30;

    if (caud_db_migrate(&db, SCHEMA_DIR, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "migrate: %s\n", err);
        return 1;
    }

    /* ship_bench.py --drop-index: what one index costs the inserts */
    after = getenv("SHIP_BENCH_AFTER_MIGRATE");

    if (after != NULL && after[0] != '\0') {
        conn = caud_db_connect(&db, err, sizeof(err));
        if (conn == NULL) {
            fprintf(stderr, "connect: %s\n", err);
            return 1;
        }
        if (mysql_real_query(conn, after, strlen(after)) != 0) {
            fprintf(stderr, "%s: %s\n", after, mysql_error(conn));
            mysql_close(conn);
            return 1;
        }
        mysql_close(conn);
    }

    n = argc - 8;
    t0 = now();

    for (i = 0; i < n; i++) {
        memset(&job[i], 0, sizeof(bench_job_t));
        job[i].db = &db;
        job[i].dir = argv[6];
        job[i].batch = strtoul(argv[7], NULL, 10);
        job[i].writer_id = strtoul(argv[8 + i], NULL, 10);

        if (pthread_create(&tid[i], NULL, bench_ship, &job[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }

    total = 0;
    rc = 0;

    for (i = 0; i < n; i++) {
        pthread_join(tid[i], NULL);

        if (job[i].shipped < 0) {
            fprintf(stderr, "ship: %s\n", job[i].err);
            rc = 1;
        }

        total += job[i].shipped;
    }

    t1 = now();
    getrusage(RUSAGE_SELF, &ru);
    cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
          + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;

    printf("records %" PRId64 " seconds %.3f rate %.0f client_cpu %.3f\n",
           total, t1 - t0, total / (t1 - t0), cpu);

    return rc;
}
