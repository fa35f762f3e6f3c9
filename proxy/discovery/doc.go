// Package discovery serves what mail clients and OAuth clients read to set themselves up for
// saslgate, on its HTTP listener: Thunderbird's autoconfig document (config-v1.1.xml, at
// /mail/config-v1.1.xml and /.well-known/autoconfig/mail/config-v1.1.xml) announcing the
// listeners (incoming and outgoing servers, as each protocol's proxy.Protocol.Autoconfig
// says) with OAuth2 authentication and draft-ietf-mailmaint-autoconfig's oAuth2 element (the
// issuer, its endpoints from its metadata, the scopes, and a published public client ID);
// WebFinger (RFC 7033 §4) answering the OpenID Connect issuer relation (OpenID Connect
// Discovery 1.0 §2) for acct: URIs (RFC 7565) of the configured mail domains; and RFC 9728
// protected resource metadata for the gateway's resource identifier and for each protocol's
// resource identifiers the issuers accept (RFC 8707 resource indicators).
package discovery
