/*
 * weft_flock.node: flock(2) for the agent's one-agent-per-host locks (src/system/flock.ts).
 * Node has no flock(); the alternative, a flock(1) helper process per lock, cost the agent two process
 * spawns (~15 ms each) on every start (issue 15).
 */
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <node_api.h>

/* tryLockExclusive(fd): true when this open file now holds the exclusive lock, false when another open file
 * (in any process, this one included) holds it; throws on any other error. Never blocks. */
static napi_value try_lock_exclusive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "tryLockExclusive: a file descriptor is needed");
    return NULL;
  }
  int r;
  do {
    r = flock(fd, LOCK_EX | LOCK_NB);
  } while (r != 0 && errno == EINTR);
  if (r == 0 || errno == EWOULDBLOCK) {
    napi_get_boolean(env, r == 0, &out);
    return out;
  }
  napi_throw_error(env, NULL, strerror(errno));
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "tryLockExclusive", NAPI_AUTO_LENGTH, try_lock_exclusive, NULL, &fn);
  napi_set_named_property(env, exports, "tryLockExclusive", fn);
  return exports;
}
