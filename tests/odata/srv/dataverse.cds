// A Dataverse-shaped OData v4 service: entity sets, keys and lookup columns
// spelled as Microsoft Dataverse spells them (Web API v9.2), with the
// service at Dataverse's path. Only what lethe's Dataverse backend touches.
//
// Every set carries `versionnumber`, Dataverse's row version, as the etag
// element: srv/dataverse.js gives each insert and update a new value from
// one global, strictly increasing counter. createdon/modifiedon are plain
// values (tests set them in the past); an insert without them gets "now".

@path: '/api/data/v9.2'
@cds.query.limit: { default: 5000, max: 5000 }
service Microsoft.Dynamics.CRM {

  aspect Row {
    createdon     : DateTime;
    modifiedon    : DateTime;
    @odata.etag
    versionnumber : Int64;
  }

  entity accounts : Row {
    key accountid : UUID;
    name          : String(160);
    statecode     : Integer;
  }

  entity leads : Row {
    key leadid              : UUID;
    fullname                : String(160);
    emailaddress1           : String(100);
    telephone1              : String(50);
    companyname             : String(100);
    statecode               : Integer;
    ![_parentaccountid_value] : UUID;
  }

  entity opportunities : Row {
    key opportunityid         : UUID;
    name                      : String(300);
    statecode                 : Integer;
    ![_originatingleadid_value] : UUID;
    ![_parentaccountid_value]   : UUID;
  }

  entity quotes : Row {
    key quoteid             : UUID;
    name                    : String(300);
    statecode               : Integer;
    ![_opportunityid_value] : UUID;
  }

  entity salesorders : Row {
    key salesorderid : UUID;
    name             : String(300);
    statecode        : Integer;
    ![_quoteid_value] : UUID;
  }

  // Notes: attached to any row through the polymorphic _objectid_value,
  // whose kind objecttypecode names (lead, opportunity, quote, ...).
  entity annotations : Row {
    key annotationid   : UUID;
    subject            : String(500);
    notetext           : LargeString;
    filename           : String(255);
    mimetype           : String(256);
    documentbody       : LargeString; // Base64 text, as on Dataverse
    filesize           : Integer;
    isdocument         : Boolean;
    objecttypecode     : String(64);
    ![_objectid_value] : UUID;
  }

  type WhoAmIResponse {
    UserId         : UUID;
    BusinessUnitId : UUID;
    OrganizationId : UUID;
  }

  function WhoAmI() returns WhoAmIResponse;
}
