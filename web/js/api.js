// Every call the page makes: the admin API with the key the operator typed in, and /v1 for the
// test box. The key lives in this tab's sessionStorage only: never in the URL or a cookie, and
// gone when the tab closes.

const ADMIN_KEY_ITEM = "jarvis.adminKey";
const API_KEY_ITEM = "jarvis.apiKey";

export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

// Relative to the page (/ui/), so the page works behind a reverse proxy that adds a prefix.
export function url(path) {
  return new URL(`..${path}`, document.baseURI).href;
}

export const keys = {
  admin: () => sessionStorage.getItem(ADMIN_KEY_ITEM),
  setAdmin: (key) => sessionStorage.setItem(ADMIN_KEY_ITEM, key),
  api: () => sessionStorage.getItem(API_KEY_ITEM) || "",
  setApi: (key) => (key ? sessionStorage.setItem(API_KEY_ITEM, key) : sessionStorage.removeItem(API_KEY_ITEM)),
  clear: () => {
    sessionStorage.removeItem(ADMIN_KEY_ITEM);
    sessionStorage.removeItem(API_KEY_ITEM);
  },
};

export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`);
  }
  const error = body && body.error ? body.error : {};
  const message = error.message || (body && body.detail) || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, message, error.param || null, error.code || null);
}

// An admin API call; `key` overrides the stored key (signing in), `null` sends none (the probe).
export async function admin(method, path, body, key = keys.admin()) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(`/admin${path}`), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "The server does not answer: is it running?");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export const get = (path) => admin("GET", path);
export const post = (path, body = {}) => admin("POST", path, body);
export const put = (path, body) => admin("PUT", path, body);
export const remove = (path) => admin("DELETE", path);
