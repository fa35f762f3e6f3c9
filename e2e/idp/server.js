// Test-only OpenID provider for saslgate's end-to-end tests. NEVER expose it:
// it listens on 127.0.0.1 only, uses oidc-provider's development interactions
// (any password is accepted), and has an unauthenticated POST /test/mint.
//
// Usage: node server.js [PORT]   (PORT from argv[2] or $PORT; 0 = pick a free one)
// Prints exactly one line "READY <issuer>" to stdout once it accepts connections.
//
// Tokens:
//   - Real grant: authorization code + PKCE (S256) for the public client
//     "saslgate-e2e" (redirect http://127.0.0.1/cb, resource urn:saslgate),
//     login/consent through devInteractions. Access tokens for resource
//     urn:saslgate are RS256 JWTs (typ at+jwt) with aud "saslgate" and an
//     "email" claim added by extraTokenClaims from the account.
//   - Device authorization grant (RFC 8628) for the same client, for `saslgate login`:
//     POST /device/auth, the user enters the code at /device (devInteractions
//     again), the client polls /token. The client may also use refresh tokens,
//     and gets one with every grant (issueRefreshToken), offline_access or not.
//   - POST /test/mint (JSON): builds a token through the provider's own
//     AccessToken model and ResourceServer, so it is signed with the provider's
//     real key exactly like a granted one. Fields (all optional):
//       sub      account id (default "alice"); claims default to the account's
//       claims   object of extra claims, replaces the account's {email}
//       aud      audience (default "saslgate")
//       scope    default "openid email imap smtp"
//       ttl      lifetime in seconds (default 3600)
//       age      seconds to shift iat into the past (expired: age > ttl)
//       resource urn:saslgate (default) or urn:saslgate:opaque (see below)
//       cert     PEM client certificate: the token is certificate-bound (RFC 8705 §3), see
//                the issue #5 block below
//     Response: {"access_token": "...", "iat": n, "exp": n}.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const RESOURCE = 'urn:saslgate';
const AUDIENCE = 'saslgate';
const RS_SCOPE = 'openid email imap smtp';
const CLIENT_ID = 'saslgate-e2e';

const accounts = {
  alice: { email: 'alice@example.com' },
  bob: { email: 'bob@example.com' },
};

// Claims set by /test/mint for one token, read back by extraTokenClaims.
const minted = new WeakMap();

function resourceServerInfo(audience) {
  return {
    scope: RS_SCOPE,
    audience,
    accessTokenFormat: 'jwt',
    accessTokenTTL: 3600,
    jwt: { sign: { alg: 'RS256' } },
  };
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
}

function readJSON(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve(text ? JSON.parse(text) : {});
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

async function mint(provider, body) {
  const sub = body.sub ?? 'alice';
  const client = await provider.Client.find(CLIENT_ID);
  const resourceServer = mintResourceServer(provider, body);
  const now = Math.floor(Date.now() / 1000);
  const iat = now - (body.age ?? 0);
  const exp = iat + (body.ttl ?? 3600);
  const token = new provider.AccessToken({
    accountId: sub,
    client,
    resourceServer,
    scope: body.scope ?? RS_SCOPE,
    gty: 'test_mint',
    iat,
    exp,
  });
  minted.set(token, body.claims ?? { email: accounts[sub]?.email ?? `${sub}@example.com` });
  bindToCertificate(token, body);
  const value = await token.save();
  return { access_token: value, iat, exp };
}

// ---- Opaque tokens, introspection, revocation, key files (saslgate issue #4) ----
// An additive layer on the configuration built in main(), kept in this one block:
//   - Resource urn:saslgate:opaque gets opaque access tokens with the scope and
//     audience ("saslgate") of urn:saslgate; /test/mint makes one when its body has
//     "resource": "urn:saslgate:opaque".
//   - features.introspection (POST /token/introspection) and features.revocation
//     (POST /token/revocation) are on. The confidential client
//     "saslgate-introspector" (client_secret_basic, INTROSPECTOR_SECRET) may
//     introspect every token; any other client only its own (the default policy
//     would let every confidential client see every token). A client revokes only
//     its own tokens: the public client "saslgate-e2e" revokes what it was issued,
//     minted tokens included.
//   - GET /test/counts -> {"introspection": n, "revocation": n}, the POSTs to those
//     endpoints since start or since POST /test/counts/reset (204).
//   - $IDP_KEYS_FILE: the private JWK Set is read from this file if it exists, else
//     the generated one is written to it, so an IdP restarted on the same port keeps
//     its keys. $IDP_ROTATE_KEY=1 puts a fresh key first: oidc-provider signs with
//     the first key that fits the alg, so the new key signs from then on while the
//     old ones stay published. oidc-provider fixes its keystore when the Provider is
//     built, so a rotation is a restart.
const OPAQUE_RESOURCE = 'urn:saslgate:opaque';
const INTROSPECTOR_ID = 'saslgate-introspector';
const INTROSPECTOR_SECRET = 'e2e-introspection-secret';
const counts = { introspection: 0, revocation: 0 };

function opaqueResourceServerInfo(audience) {
  return {
    scope: RS_SCOPE,
    audience,
    accessTokenFormat: 'opaque',
    accessTokenTTL: 3600,
  };
}

// mintResourceServer is the resource server a /test/mint token is for.
function mintResourceServer(provider, body) {
  const audience = body.aud ?? AUDIENCE;
  if (body.resource === OPAQUE_RESOURCE) {
    return new provider.ResourceServer(OPAQUE_RESOURCE, opaqueResourceServerInfo(audience));
  }
  return new provider.ResourceServer(RESOURCE, resourceServerInfo(audience));
}

function loadKeys(generated) {
  const file = process.env.IDP_KEYS_FILE;
  if (!file) return generated;
  let jwks = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : generated;
  if (process.env.IDP_ROTATE_KEY === '1') jwks = { keys: [signingKey(), ...jwks.keys] };
  fs.writeFileSync(file, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

function withOpaqueTokens(config) {
  config.jwks = loadKeys(config.jwks);
  config.clients.push({
    client_id: INTROSPECTOR_ID,
    client_secret: INTROSPECTOR_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  });
  config.features.introspection = {
    enabled: true,
    async allowedPolicy(ctx, client, token) {
      return client.clientId === INTROSPECTOR_ID || client.clientId === token.clientId;
    },
  };
  config.features.revocation = {
    enabled: true,
    async allowedPolicy(ctx, client, token) {
      return client.clientId === token.clientId;
    },
  };
  const indicators = config.features.resourceIndicators;
  const getInfo = indicators.getResourceServerInfo;
  indicators.getResourceServerInfo = async (ctx, resourceIndicator, client) => (
    resourceIndicator === OPAQUE_RESOURCE
      ? opaqueResourceServerInfo(AUDIENCE)
      : getInfo(ctx, resourceIndicator, client));
  return config;
}

function installOpaqueTestRoutes(provider) {
  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/counts' && ctx.method === 'GET') {
      ctx.body = counts;
      return;
    }
    if (ctx.path === '/test/counts/reset' && ctx.method === 'POST') {
      counts.introspection = 0;
      counts.revocation = 0;
      ctx.status = 204;
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/token/introspection') counts.introspection += 1;
    if (ctx.method === 'POST' && ctx.path === '/token/revocation') counts.revocation += 1;
    await next();
  });
}
// ---- end of the issue #4 block ----

// ---- Certificate-bound access tokens (saslgate issue #5) ----
// /test/mint with "cert" (a PEM certificate) binds the token the way oidc-provider's
// mTLS feature (certificateBoundAccessTokens) binds one at its token endpoint:
// AccessToken.setThumbprint('x5t', cert), so the provider's own code computes
// x5t#S256 and its JWT format and introspection response carry cnf.x5t#S256. The
// token endpoint's TLS client authentication is skipped: this server speaks plain
// HTTP on loopback, and what saslgate sees is the token, not how it was obtained.
function bindToCertificate(token, body) {
  if (body.cert) token.setThumbprint('x5t', body.cert);
}
// ---- end of the issue #5 block ----

// ---- Open sign-in: dynamic registration and more resources (saslgate issue #18) ----
// Additive, and only when the test that starts this IdP asks through its environment;
// without these variables the configuration is the one every other test uses:
//   IDP_REGISTRATION=open   features.registration: POST /reg registers a client (RFC 7591),
//                           GET /reg/<client_id> reads it back with its registration access
//                           token (RFC 7592 §2.1). Native clients may use any port on their
//                           loopback redirect URIs (RFC 8252 §7.3).
//   IDP_REGISTRATION=token  the same endpoint, but a registration needs an initial access
//                           token the tests never have: every registration is refused.
//   IDP_RESOURCES=R1,R2     more resource indicators (RFC 8707): a token for Ri is an RS256
//                           JWT like urn:saslgate's, with aud Ri (the gateway's resource URL).
function withOpenSignIn(config) {
  const mode = process.env.IDP_REGISTRATION ?? '';
  if (mode === 'open' || mode === 'token') {
    config.features.registration = { enabled: true, initialAccessToken: mode === 'token' };
  } else if (mode !== '') {
    throw new Error(`IDP_REGISTRATION=${mode}: want open or token`);
  }
  const extra = (process.env.IDP_RESOURCES ?? '').split(',').filter(Boolean);
  if (extra.length > 0) {
    const indicators = config.features.resourceIndicators;
    const getInfo = indicators.getResourceServerInfo;
    indicators.getResourceServerInfo = async (ctx, resourceIndicator, client) => (
      extra.includes(resourceIndicator)
        ? resourceServerInfo(resourceIndicator)
        : getInfo(ctx, resourceIndicator, client));
  }
  return config;
}
// ---- end of the issue #18 block ----

async function main() {
  const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, withOpenSignIn(withOpaqueTokens({
    jwks: { keys: [signingKey()] },
    clients: [{
      client_id: CLIENT_ID,
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/cb'],
    }],
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: account.email, email_verified: true };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator === RESOURCE) return resourceServerInfo(AUDIENCE);
          throw new errors.InvalidTarget();
        },
      },
    },
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    async extraTokenClaims(ctx, token) {
      if (minted.has(token)) return minted.get(token);
      const account = accounts[token.accountId];
      return account ? { email: account.email } : undefined;
    },
  })));
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  installOpaqueTestRoutes(provider);

  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.method === 'POST' && req.url === '/test/mint') {
      readJSON(req)
        .then((body) => mint(provider, body))
        .then((out) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(out));
        })
        .catch((err) => {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: String(err?.message ?? err) }));
        });
      return;
    }
    callback(req, res);
  });

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  console.log(`READY ${issuer}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
