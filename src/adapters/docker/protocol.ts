/**
 * Docker's remote plugin protocol (libnetwork remote NetworkDriver and IpamDriver API, as Docker 20.10 sends
 * it): request and response bodies. Field names are Docker's.
 */

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

export interface ActivateResponse {
  Implements: string[];
}

// ---- IpamDriver ----
export interface RequestPoolRequest {
  AddressSpace: string;
  Pool: string;
  SubPool: string;
  Options: Record<string, string> | null;
  V6: boolean;
}
export interface RequestPoolResponse {
  PoolID: string;
  Pool: string;
  Data: Record<string, string>;
}
export interface ReleasePoolRequest {
  PoolID: string;
}
export interface RequestAddressRequest {
  PoolID: string;
  /** Requested address without prefix length ("" for any). */
  Address: string;
  Options: Record<string, string> | null;
}
export interface RequestAddressResponse {
  /** Address with prefix length. */
  Address: string;
  Data: Record<string, string>;
}
export interface ReleaseAddressRequest {
  PoolID: string;
  /** Address without prefix length. */
  Address: string;
}
/** RequestAddress Options key/value marking the network's gateway request. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';

// ---- NetworkDriver ----
export interface IPAMData {
  AddressSpace: string;
  Pool: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string>;
}
export interface CreateNetworkRequest {
  NetworkID: string;
  Options: Record<string, unknown> | null;
  IPv4Data: IPAMData[] | null;
  IPv6Data: IPAMData[] | null;
}
export interface DeleteNetworkRequest {
  NetworkID: string;
}
export interface EndpointInterface {
  Address: string;
  AddressIPv6: string;
  MacAddress: string;
}
export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface: EndpointInterface | null;
  Options: Record<string, unknown> | null;
}
export interface CreateEndpointResponse {
  Interface: Partial<EndpointInterface> | null;
}
export interface EndpointRequest {
  NetworkID: string;
  EndpointID: string;
}
export interface JoinRequest extends EndpointRequest {
  SandboxKey: string;
  Options: Record<string, unknown> | null;
}
export interface StaticRoute {
  Destination: string;
  /** 0: via NextHop; 1: directly connected. */
  RouteType: 0 | 1;
  NextHop?: string;
}
export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway: string;
  GatewayIPv6: string;
  StaticRoutes: StaticRoute[];
  DisableGatewayService: boolean;
}
