"""Version 1 of the report-template library: a normal report for each exam kind and body
part the county reads, in Chinese and in English, written for this project.

Each entry: a key that names it across versions, the exam kind, the body-part codes it is
offered for (cloudpacs.BodyPart), and per language a label for the part, a name, the
findings (影像所见) and the impression (诊断意见). The texts describe a study without
abnormal findings; a hospital's radiologists review them before use (docs/report-templates.md).

This module is frozen once released: a later version is a new module (v2) installed by a
new migration, never an edit of this one, since migration 0011 installs it."""

from __future__ import annotations

VERSION = 1

LIMB_BONES = ("ARM", "ELBOW", "FOREARM", "WRIST", "HAND", "THIGH", "LEG", "ANKLE", "FOOT")
CT_JOINTS = ("SHOULDER", "ELBOW", "WRIST", "HIP", "KNEE", "ANKLE")

LIBRARY: list[dict[str, object]] = [
    # --- CT -----------------------------------------------------------------------------------
    {
        "key": "ct-head",
        "kind": "CT",
        "parts": ("HEAD",),
        "zh-hans": (
            "头颅",
            "头颅 CT 平扫（正常）",
            "颅骨骨质连续，未见骨折及骨质破坏。双侧大脑半球对称，脑实质内未见异常密度影，"
            "灰白质分界清楚。脑室系统大小、形态正常，脑沟、脑裂、脑池未见增宽或变窄。"
            "中线结构居中。小脑及脑干形态、密度未见异常。颅内未见出血征象。",
            "头颅 CT 平扫未见明显异常。",
        ),
        "en": (
            "Head",
            "CT head without contrast (normal)",
            "The calvarium is intact, with no fracture or destructive lesion. The cerebral hemispheres "
            "are symmetric, with normal grey-white matter differentiation and no abnormal density in the "
            "brain parenchyma. The ventricles are normal in size and shape; the sulci, fissures and "
            "cisterns are neither widened nor effaced. The midline structures are central. The "
            "cerebellum and brainstem are unremarkable. No intracranial haemorrhage.",
            "Normal unenhanced CT of the head.",
        ),
    },
    {
        "key": "ct-sinus",
        "kind": "CT",
        "parts": ("SINUS",),
        "zh-hans": (
            "鼻窦",
            "鼻窦 CT 平扫（正常）",
            "双侧上颌窦、筛窦、额窦及蝶窦发育正常，窦腔含气良好，窦壁黏膜未见增厚，窦腔内未见异常密度影。"
            "窦壁骨质连续，未见破坏。鼻中隔居中，双侧鼻甲未见肥大，鼻道通畅。",
            "鼻窦 CT 平扫未见明显异常。",
        ),
        "en": (
            "Paranasal sinuses",
            "CT paranasal sinuses without contrast (normal)",
            "The maxillary, ethmoid, frontal and sphenoid sinuses are normally developed and well "
            "aerated, with no mucosal thickening or abnormal content. The sinus walls are intact. The "
            "nasal septum is central, the turbinates are not enlarged and the nasal passages are patent.",
            "Normal CT of the paranasal sinuses.",
        ),
    },
    {
        "key": "ct-orbit",
        "kind": "CT",
        "parts": ("ORBIT",),
        "zh-hans": (
            "眼眶",
            "眼眶 CT 平扫（正常）",
            "双侧眼眶对称，眶壁骨质连续，未见骨折。双侧眼球形态、大小正常，眼环完整，球内未见异常密度影。"
            "双侧眼外肌及视神经走行、粗细未见异常，球后脂肪间隙清晰。",
            "双侧眼眶 CT 平扫未见明显异常。",
        ),
        "en": (
            "Orbit",
            "CT orbits without contrast (normal)",
            "The orbits are symmetric and the orbital walls are intact, with no fracture. Both globes are "
            "normal in size and shape, with no abnormal density within them. The extraocular muscles and "
            "optic nerves are normal in course and calibre; the retrobulbar fat is clear.",
            "Normal CT of both orbits.",
        ),
    },
    {
        "key": "ct-neck",
        "kind": "CT",
        "parts": ("NECK",),
        "zh-hans": (
            "颈部",
            "颈部 CT 平扫（正常）",
            "颈部软组织结构对称。咽腔及喉腔形态正常，未见狭窄及异常软组织影。甲状腺大小、形态正常，密度均匀。"
            "双侧颌下腺、腮腺未见异常。颈部各间隙清晰，未见肿大淋巴结。气管居中，管腔通畅。",
            "颈部 CT 平扫未见明显异常。",
        ),
        "en": (
            "Neck",
            "CT neck without contrast (normal)",
            "The soft tissues of the neck are symmetric. The pharynx and larynx are normal, with no "
            "narrowing or mass. The thyroid is normal in size and shape and homogeneous. The submandibular "
            "and parotid glands are unremarkable. The fascial spaces are clear, with no enlarged lymph "
            "nodes. The trachea is central and patent.",
            "Normal unenhanced CT of the neck.",
        ),
    },
    {
        "key": "ct-chest",
        "kind": "CT",
        "parts": ("CHEST",),
        "zh-hans": (
            "胸部",
            "胸部 CT 平扫（正常）",
            "胸廓对称。气管及双侧主支气管、叶段支气管通畅，管壁未见增厚。双肺纹理清晰，走行自然，"
            "双肺实质内未见实变、结节或肿块影。纵隔居中，纵隔及双肺门未见肿大淋巴结。心脏及大血管形态、大小未见异常，"
            "心包未见积液。双侧胸膜未见增厚，胸腔内未见积液。所示胸壁软组织及骨质未见异常。",
            "胸部 CT 平扫未见明显异常。",
        ),
        "en": (
            "Chest",
            "CT chest without contrast (normal)",
            "The thorax is symmetric. The trachea, main, lobar and segmental bronchi are patent, with no "
            "wall thickening. The lung markings are clear; there is no consolidation, nodule or mass in "
            "either lung. The mediastinum is central, with no enlarged mediastinal or hilar lymph nodes. "
            "The heart and great vessels are normal in size and shape; no pericardial effusion. The "
            "pleura is not thickened and there is no pleural effusion. The chest wall and visible bones "
            "are unremarkable.",
            "Normal unenhanced CT of the chest.",
        ),
    },
    {
        "key": "ct-abdomen",
        "kind": "CT",
        "parts": ("ABDOMEN",),
        "zh-hans": (
            "腹部",
            "上腹部 CT 平扫（正常）",
            "肝脏大小、形态正常，各叶比例协调，肝实质密度均匀，未见异常密度影。肝内外胆管未见扩张。"
            "胆囊大小正常，壁不厚，腔内未见异常密度影。脾脏大小、形态及密度未见异常。胰腺形态、密度正常，胰管未见扩张。"
            "双侧肾上腺未见增粗及结节。双肾大小、形态正常，实质内未见异常密度影，肾盂肾盏未见扩张。"
            "腹膜后未见肿大淋巴结，腹腔内未见积液及游离气体。",
            "上腹部 CT 平扫未见明显异常。",
        ),
        "en": (
            "Abdomen",
            "CT upper abdomen without contrast (normal)",
            "The liver is normal in size and shape, with homogeneous attenuation and no focal lesion. The "
            "intra- and extrahepatic bile ducts are not dilated. The gallbladder is normal in size, its wall "
            "not thickened, with no abnormal content. The spleen is unremarkable. The pancreas is normal in "
            "shape and density; the pancreatic duct is not dilated. The adrenal glands are not thickened and "
            "show no nodule. Both kidneys are normal in size and shape, with no focal lesion and no "
            "pelvicalyceal dilatation. No enlarged retroperitoneal lymph nodes; no ascites or free gas.",
            "Normal unenhanced CT of the upper abdomen.",
        ),
    },
    {
        "key": "ct-pelvis",
        "kind": "CT",
        "parts": ("PELVIS",),
        "zh-hans": (
            "盆腔",
            "盆腔 CT 平扫（正常）",
            "膀胱充盈尚可，壁光滑，未见增厚，腔内未见异常密度影。盆腔内脏器大小、形态及密度未见明显异常。"
            "直肠及乙状结肠未见异常。盆腔内未见肿块影，未见肿大淋巴结，盆腔内未见积液。所示盆壁骨质未见异常。",
            "盆腔 CT 平扫未见明显异常。",
        ),
        "en": (
            "Pelvis",
            "CT pelvis without contrast (normal)",
            "The bladder is adequately filled, its wall smooth and not thickened, with no abnormal "
            "content. The pelvic organs are normal in size, shape and density. The rectum and sigmoid "
            "colon are unremarkable. No pelvic mass, no enlarged lymph nodes and no free fluid. The "
            "visible pelvic bones are unremarkable.",
            "Normal unenhanced CT of the pelvis.",
        ),
    },
    {
        "key": "ct-cspine",
        "kind": "CT",
        "parts": ("CSPINE",),
        "zh-hans": (
            "颈椎",
            "颈椎 CT 平扫（正常）",
            "颈椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏及骨折。各椎间盘未见膨出及突出，"
            "椎管及双侧椎间孔未见狭窄。寰枢关节对位良好。椎旁软组织未见异常。",
            "颈椎 CT 平扫未见明显异常。",
        ),
        "en": (
            "Cervical spine",
            "CT cervical spine (normal)",
            "The cervical spine is normally aligned with its lordosis preserved. The vertebral bodies are "
            "normal in shape and height, with no fracture or destructive lesion. No disc bulge or "
            "herniation; the spinal canal and neural foramina are not narrowed. The atlantoaxial joint is "
            "congruent. The paravertebral soft tissues are unremarkable.",
            "Normal CT of the cervical spine.",
        ),
    },
    {
        "key": "ct-tspine",
        "kind": "CT",
        "parts": ("TSPINE",),
        "zh-hans": (
            "胸椎",
            "胸椎 CT 平扫（正常）",
            "胸椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏及骨折。各椎间盘未见突出，"
            "椎管未见狭窄。所示肋椎关节未见异常。椎旁软组织未见异常。",
            "胸椎 CT 平扫未见明显异常。",
        ),
        "en": (
            "Thoracic spine",
            "CT thoracic spine (normal)",
            "The thoracic spine is normally aligned with its kyphosis preserved. The vertebral bodies are "
            "normal in shape and height, with no fracture or destructive lesion. No disc herniation; the "
            "spinal canal is not narrowed. The visible costovertebral joints and the paravertebral soft "
            "tissues are unremarkable.",
            "Normal CT of the thoracic spine.",
        ),
    },
    {
        "key": "ct-lspine",
        "kind": "CT",
        "parts": ("LSPINE",),
        "zh-hans": (
            "腰椎",
            "腰椎 CT 平扫（正常）",
            "腰椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏及骨折，椎体边缘未见明显骨质增生。"
            "各椎间盘未见膨出及突出，硬膜囊未见受压，椎管及双侧侧隐窝、椎间孔未见狭窄。双侧小关节未见异常。"
            "椎旁软组织未见异常。",
            "腰椎 CT 平扫未见明显异常。",
        ),
        "en": (
            "Lumbar spine",
            "CT lumbar spine (normal)",
            "The lumbar spine is normally aligned with its lordosis preserved. The vertebral bodies are "
            "normal in shape and height, with no fracture, destructive lesion or significant osteophytes. "
            "No disc bulge or herniation; the thecal sac is not compressed, and the spinal canal, lateral "
            "recesses and neural foramina are not narrowed. The facet joints and paravertebral soft "
            "tissues are unremarkable.",
            "Normal CT of the lumbar spine.",
        ),
    },
    {
        "key": "ct-sspine",
        "kind": "CT",
        "parts": ("SSPINE",),
        "zh-hans": (
            "骶尾椎",
            "骶尾椎 CT 平扫（正常）",
            "骶椎及尾椎形态、序列未见异常，骨质连续，未见骨折及骨质破坏。骶孔对称，未见狭窄。"
            "双侧骶髂关节间隙正常，关节面光整。骶前及周围软组织未见异常。",
            "骶尾椎 CT 平扫未见明显异常。",
        ),
        "en": (
            "Sacrum and coccyx",
            "CT sacrum and coccyx (normal)",
            "The sacrum and coccyx are normal in shape and alignment, with no fracture or destructive "
            "lesion. The sacral foramina are symmetric and not narrowed. The sacroiliac joints have normal "
            "joint spaces and smooth articular surfaces. The presacral and surrounding soft tissues are "
            "unremarkable.",
            "Normal CT of the sacrum and coccyx.",
        ),
    },
    {
        "key": "ct-ribs",
        "kind": "CT",
        "parts": ("RIB",),
        "zh-hans": (
            "肋骨",
            "肋骨 CT 平扫及三维重建（正常）",
            "双侧肋骨走行自然，骨皮质连续，未见骨折线及骨质破坏。所示胸骨、锁骨及胸椎未见骨折。"
            "所示双肺未见挫伤影，双侧胸腔未见积液及积气。胸壁软组织未见肿胀。",
            "双侧肋骨未见骨折。",
        ),
        "en": (
            "Ribs",
            "CT ribs with 3D reconstruction (normal)",
            "The ribs have a normal course, with continuous cortices and no fracture line or destructive "
            "lesion. The visible sternum, clavicles and thoracic vertebrae show no fracture. No pulmonary "
            "contusion in the visible lungs; no pleural effusion or pneumothorax. No chest wall swelling.",
            "No rib fracture.",
        ),
    },
    {
        "key": "ct-joint",
        "kind": "CT",
        "parts": CT_JOINTS,
        "zh-hans": (
            "关节",
            "关节 CT 平扫（正常）",
            "所扫关节诸骨骨质结构完整，骨皮质连续，未见骨折及骨质破坏。关节对位良好，关节间隙正常，"
            "关节面光整。关节腔内未见积液。周围软组织未见肿胀。",
            "所扫关节 CT 平扫未见明显异常。",
        ),
        "en": (
            "Joint",
            "CT joint (normal)",
            "The bones of the examined joint are intact, with continuous cortices and no fracture or "
            "destructive lesion. The joint is congruent, the joint space is normal and the articular "
            "surfaces are smooth. No joint effusion. No soft-tissue swelling.",
            "Normal CT of the examined joint.",
        ),
    },
    # --- DR -----------------------------------------------------------------------------------
    {
        "key": "dr-chest",
        "kind": "DR",
        "parts": ("CHEST",),
        "zh-hans": (
            "胸部",
            "胸部正位片（正常）",
            "胸廓对称，气管居中。双肺纹理清晰，走行自然，双肺野内未见异常密度影。双肺门影不大，结构清楚。"
            "纵隔不宽。心影大小、形态正常。双侧膈面光整，双侧肋膈角锐利。所示骨质未见异常。",
            "心、肺、膈未见明显异常。",
        ),
        "en": (
            "Chest",
            "Chest radiograph, PA (normal)",
            "The thorax is symmetric and the trachea central. The lung markings are clear and normal in "
            "course, with no abnormal opacity in either lung. The hila are not enlarged. The mediastinum "
            "is not widened. The heart is normal in size and shape. Both hemidiaphragms are smooth and the "
            "costophrenic angles are sharp. The visible bones are unremarkable.",
            "Normal heart, lungs and diaphragm.",
        ),
    },
    {
        "key": "dr-skull",
        "kind": "DR",
        "parts": ("HEAD",),
        "zh-hans": (
            "头颅",
            "头颅正侧位片（正常）",
            "头颅大小、形态正常。颅骨骨质连续，内外板及板障结构清楚，未见骨折线及骨质破坏。颅缝未见分离。蝶鞍大小、形态正常。",
            "头颅平片未见明显异常。",
        ),
        "en": (
            "Skull",
            "Skull radiographs, AP and lateral (normal)",
            "The skull is normal in size and shape. The calvarium is intact, with clear inner and outer "
            "tables and diploe, and no fracture line or destructive lesion. The sutures are not diastased. "
            "The sella turcica is normal.",
            "Normal skull radiographs.",
        ),
    },
    {
        "key": "dr-sinus",
        "kind": "DR",
        "parts": ("SINUS",),
        "zh-hans": (
            "鼻窦",
            "鼻窦华氏位片（正常）",
            "双侧上颌窦、额窦及筛窦透亮度良好，窦腔内未见异常密度影，窦壁骨质完整。鼻中隔居中。",
            "鼻窦未见明显异常。",
        ),
        "en": (
            "Paranasal sinuses",
            "Sinus radiograph, occipitomental view (normal)",
            "The maxillary, frontal and ethmoid sinuses are well aerated, with no abnormal opacity; the "
            "sinus walls are intact. The nasal septum is central.",
            "Normal paranasal sinuses.",
        ),
    },
    {
        "key": "dr-abdomen",
        "kind": "DR",
        "parts": ("ABDOMEN",),
        "zh-hans": (
            "腹部",
            "腹部立位平片（正常）",
            "双侧膈下未见游离气体。腹部肠管未见明显扩张积气，未见气液平面。腹部未见异常致密影。"
            "双侧腰大肌影清晰。所示骨质未见异常。",
            "腹部立位平片未见明显异常。",
        ),
        "en": (
            "Abdomen",
            "Abdominal radiograph, erect (normal)",
            "No free gas under the diaphragm. The bowel is not dilated and there are no air-fluid levels. "
            "No abnormal calcification or opaque foreign body. The psoas outlines are clear. The visible "
            "bones are unremarkable.",
            "Normal erect abdominal radiograph.",
        ),
    },
    {
        "key": "dr-pelvis",
        "kind": "DR",
        "parts": ("PELVIS",),
        "zh-hans": (
            "骨盆",
            "骨盆正位片（正常）",
            "骨盆对称，骨盆环完整。所示诸骨骨质结构完整，骨皮质连续，未见骨折及骨质破坏。"
            "双侧骶髂关节及耻骨联合间隙正常。双侧髋关节对位良好，关节间隙正常。周围软组织未见异常。",
            "骨盆未见明显异常。",
        ),
        "en": (
            "Pelvis",
            "Pelvis radiograph, AP (normal)",
            "The pelvis is symmetric and the pelvic ring intact. The bones are intact, with continuous "
            "cortices and no fracture or destructive lesion. The sacroiliac joints and the pubic symphysis "
            "are normal. Both hips are congruent with normal joint spaces. The soft tissues are unremarkable.",
            "Normal pelvis.",
        ),
    },
    {
        "key": "dr-cspine",
        "kind": "DR",
        "parts": ("CSPINE",),
        "zh-hans": (
            "颈椎",
            "颈椎正侧位片（正常）",
            "颈椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏，椎体边缘未见明显骨质增生。"
            "各椎间隙未见狭窄。寰枢关节对位良好。椎前软组织未见增厚。",
            "颈椎未见明显异常。",
        ),
        "en": (
            "Cervical spine",
            "Cervical spine radiographs, AP and lateral (normal)",
            "The cervical spine is normally aligned with its lordosis preserved. The vertebral bodies are "
            "normal in shape and height, with no destructive lesion or significant osteophytes. The disc "
            "spaces are preserved. The atlantoaxial joint is congruent. The prevertebral soft tissues are "
            "not thickened.",
            "Normal cervical spine.",
        ),
    },
    {
        "key": "dr-tspine",
        "kind": "DR",
        "parts": ("TSPINE",),
        "zh-hans": (
            "胸椎",
            "胸椎正侧位片（正常）",
            "胸椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏及压缩变形。各椎间隙未见狭窄。"
            "椎旁软组织未见异常。",
            "胸椎未见明显异常。",
        ),
        "en": (
            "Thoracic spine",
            "Thoracic spine radiographs, AP and lateral (normal)",
            "The thoracic spine is normally aligned with its kyphosis preserved. The vertebral bodies are "
            "normal in shape and height, with no destructive lesion or compression. The disc spaces are "
            "preserved. The paravertebral soft tissues are unremarkable.",
            "Normal thoracic spine.",
        ),
    },
    {
        "key": "dr-lspine",
        "kind": "DR",
        "parts": ("LSPINE",),
        "zh-hans": (
            "腰椎",
            "腰椎正侧位片（正常）",
            "腰椎序列连续，生理曲度存在。各椎体形态、大小正常，骨质未见破坏，椎体边缘未见明显骨质增生。"
            "各椎间隙未见狭窄。椎弓根及附件未见异常。椎旁软组织未见异常。",
            "腰椎未见明显异常。",
        ),
        "en": (
            "Lumbar spine",
            "Lumbar spine radiographs, AP and lateral (normal)",
            "The lumbar spine is normally aligned with its lordosis preserved. The vertebral bodies are "
            "normal in shape and height, with no destructive lesion or significant osteophytes. The disc "
            "spaces are preserved. The pedicles and posterior elements are unremarkable, as are the "
            "paravertebral soft tissues.",
            "Normal lumbar spine.",
        ),
    },
    {
        "key": "dr-sspine",
        "kind": "DR",
        "parts": ("SSPINE",),
        "zh-hans": (
            "骶尾椎",
            "骶尾椎正侧位片（正常）",
            "骶椎及尾椎形态、序列未见异常，骨质连续，未见骨折及骨质破坏。双侧骶髂关节间隙正常。周围软组织未见异常。",
            "骶尾椎未见明显异常。",
        ),
        "en": (
            "Sacrum and coccyx",
            "Sacrum and coccyx radiographs, AP and lateral (normal)",
            "The sacrum and coccyx are normal in shape and alignment, with no fracture or destructive "
            "lesion. The sacroiliac joint spaces are normal. The soft tissues are unremarkable.",
            "Normal sacrum and coccyx.",
        ),
    },
    {
        "key": "dr-shoulder",
        "kind": "DR",
        "parts": ("SHOULDER",),
        "zh-hans": (
            "肩关节",
            "肩关节正位片（正常）",
            "所示肱骨近端、肩胛骨及锁骨远端骨质结构完整，骨皮质连续，未见骨折及骨质破坏。"
            "肩关节对位良好，关节间隙正常。肩锁关节未见分离。周围软组织未见异常钙化。",
            "肩关节未见明显异常。",
        ),
        "en": (
            "Shoulder",
            "Shoulder radiograph, AP (normal)",
            "The proximal humerus, scapula and distal clavicle are intact, with continuous cortices and no "
            "fracture or destructive lesion. The glenohumeral joint is congruent with a normal joint "
            "space. The acromioclavicular joint is not separated. No soft-tissue calcification.",
            "Normal shoulder.",
        ),
    },
    {
        "key": "dr-clavicle",
        "kind": "DR",
        "parts": ("CLAVICLE",),
        "zh-hans": (
            "锁骨",
            "锁骨正位片（正常）",
            "锁骨形态正常，骨皮质连续，未见骨折线及骨质破坏。肩锁关节及胸锁关节对位良好。周围软组织未见肿胀。",
            "锁骨未见明显异常。",
        ),
        "en": (
            "Clavicle",
            "Clavicle radiograph (normal)",
            "The clavicle is normal in shape, with a continuous cortex and no fracture line or destructive "
            "lesion. The acromioclavicular and sternoclavicular joints are congruent. No soft-tissue swelling.",
            "Normal clavicle.",
        ),
    },
    {
        "key": "dr-ribs",
        "kind": "DR",
        "parts": ("RIB",),
        "zh-hans": (
            "肋骨",
            "肋骨斜位片（正常）",
            "所示肋骨走行自然，骨皮质连续，未见骨折线及骨质破坏。所示肺野内未见异常密度影，未见气胸征象。"
            "胸壁软组织未见肿胀。",
            "所示肋骨未见明显骨折。",
        ),
        "en": (
            "Ribs",
            "Rib radiographs, oblique (normal)",
            "The visible ribs have a normal course, with continuous cortices and no fracture line or "
            "destructive lesion. No abnormal opacity in the visible lung and no pneumothorax. No chest wall "
            "swelling.",
            "No fracture of the visible ribs.",
        ),
    },
    {
        "key": "dr-hip",
        "kind": "DR",
        "parts": ("HIP",),
        "zh-hans": (
            "髋关节",
            "髋关节正位片（正常）",
            "所示股骨头形态、大小正常，股骨头、颈及髋臼骨质结构完整，未见骨折及骨质破坏，股骨头内未见密度异常。"
            "髋关节对位良好，关节间隙正常，关节面光整。周围软组织未见异常。",
            "髋关节未见明显异常。",
        ),
        "en": (
            "Hip",
            "Hip radiograph, AP (normal)",
            "The femoral head is normal in shape and size. The femoral head and neck and the acetabulum are "
            "intact, with no fracture or destructive lesion and no abnormal density of the femoral head. "
            "The hip is congruent with a normal joint space and smooth articular surfaces. The soft tissues "
            "are unremarkable.",
            "Normal hip.",
        ),
    },
    {
        "key": "dr-knee",
        "kind": "DR",
        "parts": ("KNEE",),
        "zh-hans": (
            "膝关节",
            "膝关节正侧位片（正常）",
            "组成膝关节诸骨骨质结构完整，骨皮质连续，未见骨折及骨质破坏。关节对位良好，关节间隙正常，"
            "关节面光整，关节边缘未见明显骨质增生。髌骨位置正常。髌上囊未见肿胀，周围软组织未见异常。",
            "膝关节未见明显异常。",
        ),
        "en": (
            "Knee",
            "Knee radiographs, AP and lateral (normal)",
            "The bones of the knee are intact, with continuous cortices and no fracture or destructive "
            "lesion. The joint is congruent, the joint spaces are normal, the articular surfaces smooth, "
            "with no significant osteophytes. The patella is normally positioned. No suprapatellar effusion; "
            "the soft tissues are unremarkable.",
            "Normal knee.",
        ),
    },
    {
        "key": "dr-limb",
        "kind": "DR",
        "parts": LIMB_BONES,
        "zh-hans": (
            "四肢",
            "四肢骨关节正侧位片（正常）",
            "所摄骨质结构完整，骨皮质连续，骨小梁清晰，未见骨折线及骨质破坏。所示关节对位良好，关节间隙正常，"
            "关节面光整。周围软组织未见肿胀及异常密度影。",
            "所摄骨关节未见明显异常。",
        ),
        "en": (
            "Limb",
            "Limb radiographs, AP and lateral (normal)",
            "The bones shown are intact, with continuous cortices and clear trabeculae, and no fracture line "
            "or destructive lesion. The joints shown are congruent, with normal joint spaces and smooth "
            "articular surfaces. No soft-tissue swelling or opaque foreign body.",
            "Normal bones and joints as imaged.",
        ),
    },
]
