// The dashboard's only way to the server: the public HTTP API, with the
// key the user entered for this browser session.

const keyName = 'kagzi.apiKey';

export function getKey() {
  return sessionStorage.getItem(keyName) || '';
}

export function setKey(key) {
  if (key) sessionStorage.setItem(keyName, key);
  else sessionStorage.removeItem(keyName);
}

// ApiError is a refused or failed request; its message is a sentence.
export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message || sentence(status, problem));
    this.status = status;
    this.problem = problem;
  }
}

function sentence(status, problem) {
  const detail = problem && problem.detail ? capitalize(problem.detail) : '';
  if (status === 401) {
    return getKey()
      ? 'The server refused the API key: it is unknown, revoked or expired. Enter another one on the Key page.'
      : 'The server needs an API key. Enter one on the Key page.';
  }
  if (status === 403) {
    return 'Your API key may not do this: it lacks the role or the namespace.' + (detail ? ' ' + detail : '');
  }
  if (status === 503) return 'The server is unavailable right now (is its database up?). Try again in a moment.';
  if (detail) return detail;
  return `The server answered ${status}${problem && problem.title ? ' (' + problem.title + ')' : ''}.`;
}

function capitalize(s) {
  s = String(s).trim();
  if (!s) return s;
  s = s[0].toUpperCase() + s.slice(1);
  return /[.!?]$/.test(s) ? s : s + '.';
}

// api sends one request and returns the decoded answer (null for 204).
export async function api(method, path, { query, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const headers = { Accept: 'application/json' };
  const key = getKey();
  if (key) headers.Authorization = 'Bearer ' + key;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new ApiError(0, null, 'The server could not be reached. Check that it is running, then try again.');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// ns is the path of a namespace.
export function nsPath(ns) {
  return '/v1/namespaces/' + encodeURIComponent(ns);
}
