"""Every default of the service, one named constant each."""

KEY_PREFIX = "collector"                 # prefix of every Redis key the service owns
QUEUE_NAME = "collector"                 # the RQ queue jobs go to
JOB_TIMEOUT_S = 3600                     # a job running longer than this is failed
RECORD_TTL_S = 7 * 24 * 3600             # how long a finished job's record is kept
FAILED_RECORD_TTL_S = 30 * 24 * 3600     # how long a failed job's record is kept
PROGRESS_INTERVAL_S = 0.25               # progress writes to Redis are coalesced to this period
WORKERS = 2                              # worker children a pool forks when not told
SHUTDOWN_GRACE_S = 30.0                  # how long SIGTERM waits for running jobs before killing
RESPAWN_BACKOFF_S = 0.5                  # pause between respawns of a child that keeps dying at once
HOST = "127.0.0.1"                       # address `serve` and `up` bind to
PORT = 8000                              # port `serve` and `up` listen on
MAX_BODY_BYTES = 1024 * 1024             # largest request body the API reads
MAINTENANCE_INTERVAL_S = 1.0             # how often a pool fires due schedules and advances processes
URL = "http://127.0.0.1:8000"            # the service the CLI client (`submit`, `get`, `list`, ...) talks to
CHECK_TIMEOUT_S = 10                     # how long POST /platforms/check waits for a worker to answer
MAX_JSON_DEPTH = 32                      # deepest nesting of arrays/objects a request body may have
MAX_STRING_CHARS = 64 * 1024             # longest string (or object key) a request body may hold
MIN_TOKEN_CHARS = 16                     # shortest API token accepted: shorter ones are guessable
RETRY_MAX = 2                            # retries of a job after a transient error or a worker death
RETRY_BACKOFF_S = 2.0                    # delay before the first retry; doubles each retry
RETRY_BACKOFF_CAP_S = 300.0              # longest delay between two retries
RETRY_JITTER = 0.1                       # up to this fraction of a retry delay is taken off at random
MAX_WORKER_DEATHS = 3                    # a job whose worker died this often fails for good (no poison loop)
CANCEL_GRACE_S = 10.0                    # how long a running job may take to stop after a cancel before it is killed
TIMEOUT_GRACE_S = 5.0                    # past its timeout plus this, a job that ignores the alarm is killed
POOL_HEARTBEAT_S = 1.0                   # how often a pool refreshes its heartbeat key
POOL_HEARTBEAT_TTL_S = 10                # a pool whose heartbeat is older than this is dead and its jobs recovered
# How often one process (of all pools and APIs) sweeps for jobs queued or started that nothing holds: in no queue,
# no worker's claims or slot, not scheduled. A job is settled when it looks so on two sweeps this far apart.
SWEEP_INTERVAL_S = 30.0
# The safety net of a record not yet ended (queued, started, scheduled, waiting): it expires this long after its
# last move (submit, requeue, retry, resume) however it got lost; an end sets the final TTL.
OPEN_RECORD_TTL_S = 30 * 24 * 3600
SWEEP_BATCH = 1000                       # open jobs one sweep reads per round trip
REAP_INTERVAL_S = 2.0                    # how often pools and the API look for dead pools and due retries
REDIS_WAIT_S = 300.0                     # how long a job's final write waits for Redis to come back
EVENTS_MAXLEN = 10000                    # events kept per job (approximately: XADD MAXLEN ~)
CHECKPOINT_MAX_BYTES = 64 * 1024         # largest state `ctx.checkpoint` stores
LOG_FORMAT = "text"                      # `text` for people, `json` for one JSON object per line
LIST_LIMIT = 20                          # jobs `GET /execution/list` answers when not told
LIST_MAX_LIMIT = 200                     # most jobs one `GET /execution/list` page may hold
LIST_SCAN = 1000                         # most index entries one filtered list request reads before answering
LOG_EVENTS_PER_JOB = 1000                # `ctx.log` lines kept on a job's events stream; later ones are counted
WAIT_TIMEOUT_S = 24 * 3600              # how long `ctx.wait_for` waits for outside input when not told
WAIT_MAX_TIMEOUT_S = 30 * 24 * 3600      # the longest wait for input or children a job may ask for
SPAWN_MAX_CHILDREN = 1000                # most sub-jobs one job may spawn
HTTP_THREADS = 8                         # threads of `serve`/`up` that run requests (slow clients hold none)
HTTP_CONNECTION_LIMIT = 1000             # open connections `serve`/`up` hold at once; more wait in the backlog
HTTP_HEADER_TIMEOUT_S = 10.0             # a request's headers must arrive within this of its first byte
HTTP_BODY_TIMEOUT_S = 30.0               # ... and its whole body within this of its first byte
HTTP_IDLE_TIMEOUT_S = 30.0               # a connection with nothing arriving (kept alive, stalled) is closed then
HTTP_MAX_HEADER_BYTES = 64 * 1024        # largest request line plus headers (431 above)
DATASET_MAX_ROWS = 10_000                # rows one dataset of a job keeps in Redis; later rows are counted, not kept
DATASET_MAX_BYTES = 8 * 1024 * 1024      # JSON bytes one dataset of a job keeps in Redis; rows past it are not kept
DATASET_CHUNK_ROWS = 1000                # rows per Redis key a dataset is cut into, so a page reads only its keys
FULL_PAGE_ROWS = 1000                    # rows of each dataset `GET /execution/get?full` answers when not told
FULL_PAGE_MAX_ROWS = 10_000              # most rows of each dataset one `full` page may hold
MAX_TIMEOUT_S = 24 * 3600                # the longest timeout a job may have (spec, platform or service default)
MAX_SCHEDULES = 100                      # most schedules the service holds at once
SCHEDULE_MIN_INTERVAL_S = 60             # shortest time between two ticks of a schedule (interval or cron)
SUBMITS_PER_MINUTE = 120                 # submits one caller may make per minute (run, check, process, schedule)
RATE_WINDOW_S = 60                       # the fixed window the submit rate is counted in
SECRET_MASK_MIN_CHARS = 4                # shorter secret values are not masked in text and data (they would garble it)
DATA_DIR = "data"                        # where jobs read and write local files, relative to the working directory
EGRESS_MAX_REDIRECTS = 5                 # redirects an HTTP request of a job follows before it fails
MAX_RESPONSE_BYTES = 64 * 1024 * 1024    # largest HTTP response body a job reads (a FatalError above)
