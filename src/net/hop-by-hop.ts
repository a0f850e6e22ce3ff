/**
 * Hop-by-hop headers (RFC 9110 7.6.1, with the non-standard proxy-connection): they describe
 * one connection and never travel past it. Each hop the gateway makes adds its own to these.
 */
export const HOP_BY_HOP_HEADERS: readonly string[] = ['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'te', 'trailer', 'upgrade']
