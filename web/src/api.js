// A small client of the hangard HTTP API (same origin).

/** ApiError carries the API's {"error":{"code","message"}} answer. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || '';
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, 'network', `cannot reach hangard: ${err.message}`);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!resp.ok) {
      const e = data && data.error;
      throw new ApiError(resp.status, e && e.code, (e && e.message) || text.slice(0, 200) || resp.statusText);
    }
    return data;
  }

  async listSessions(state) {
    const q = state ? `?state=${encodeURIComponent(state)}` : '';
    const d = await this.request('GET', `/v1/sessions${q}`);
    return Array.isArray(d) ? d : (d && d.sessions) || [];
  }

  /** whoami names the key's tenant: {id, name, …}; a 401 means a bad key. */
  whoami() { return this.request('GET', '/v1/whoami'); }

  getSession(id) { return this.request('GET', `/v1/sessions/${encodeURIComponent(id)}`); }
  createSession(req) { return this.request('POST', '/v1/sessions', req); }
  endSession(id) { return this.request('DELETE', `/v1/sessions/${encodeURIComponent(id)}`); }

  /** ticket mints a WebSocket ticket: {role, ttl?, uses?}. */
  ticket(id, req) { return this.request('POST', `/v1/sessions/${encodeURIComponent(id)}/tickets`, req); }

  async listPools() {
    const d = await this.request('GET', '/v1/pools');
    return Array.isArray(d) ? d : (d && d.pools) || [];
  }
}
